"""Which uploads' queues a worker consumes, and with what prefetch: its fair share of them (worker.share.allocate).

The broker applies a prefetch to the consumers made after it, so a new prefetch means a new
consumer. An upload whose consumer had a larger prefetch gets its new one once none of its rows
are held, so that it never holds both, and the worker never more than its prefetch; a new
upload, or one whose consumer had a prefetch of 1 (before the worker widened it), at once.
"""

from collections.abc import Callable

from kubejob.ledger import OpenUpload
from worker.deliveries import Deliveries, PlainDeliveries
from worker.share import allocate


class Consumers:
    """The consumers of one channel, one per upload served; `declare` declares an upload's queue."""

    def __init__(self, deliveries: Deliveries | PlainDeliveries, *, prefetch: int,
                 qos: Callable[[int], None], declare: Callable[[str], None],
                 on_message: Callable[..., None]) -> None:
        self._deliveries, self._prefetch = deliveries, prefetch
        self._qos, self._declare, self._on_message = qos, declare, on_message
        self.queues: dict[str, str] = {}  # upload id -> its queue, of the uploads served
        self._served: list[OpenUpload] = []
        self._narrow = True
        self._wanted: dict[str, int] = {}  # upload id -> the prefetch its consumer is to have
        self._consumers: dict[str, tuple[str, int]] = {}  # upload id -> (consumer tag, prefetch)
        self._replacing: dict[str, int] = {}  # upload id -> the prefetch of its consumer cancelled for a new one
        self.due = False  # what is wanted and what is consumed may differ

    def serve(self, served: list[OpenUpload], *, narrow: bool) -> None:
        """Consume the queues of `served` (oldest first) with their shares; each with 1 while `narrow`."""
        if (served, narrow) == (self._served, self._narrow):
            return
        self._served, self._narrow, self.queues = served, narrow, {u.id: u.queue for u in served}
        shares = allocate(served, self._prefetch)
        self._wanted = dict.fromkeys(shares, 1) if narrow else shares
        self.due = True

    def consumed(self) -> list[str]:
        """The queues consumed now."""
        return [self.queues[upload_id] for upload_id in self._consumers if upload_id in self.queues]

    def adjust(self, held: Callable[[str], int]) -> None:
        """Cancel each consumer whose prefetch is no longer wanted, and make those wanted that can be made now;
        `held(upload id)` is how many of its rows are held."""
        self.due = False
        for upload_id, (tag, prefetch) in list(self._consumers.items()):
            if self._wanted.get(upload_id) != prefetch:
                self._deliveries.cancel(tag)
                del self._consumers[upload_id]
                self._replacing[upload_id] = prefetch
        for upload_id in [u for u in self._replacing if u not in self._wanted]:
            del self._replacing[upload_id]
        for upload_id, prefetch in self._wanted.items():
            if upload_id in self._consumers:
                continue
            if self._replacing.get(upload_id, 1) > 1 and held(upload_id):
                self.due = True  # once they are settled
                continue
            self._replacing.pop(upload_id, None)
            queue = self.queues[upload_id]
            self._declare(queue)  # in case its producer has not yet
            self._qos(prefetch)
            self._consumers[upload_id] = (self._deliveries.consume(queue, self._on_message), prefetch)

    def cancel_all(self) -> None:
        for tag, _ in self._consumers.values():
            self._deliveries.cancel(tag)
        self._consumers.clear()
