"""What a reading of the backlog gives, and the errors of every source that reads the queues.

The readers of the broker (scaler.queue_depth, the management API; scaler.queue_live, AMQP) raise
`QueueReadError`, so the loop handles one family whatever the source; scaler.backlog sums what
they read into `QueueCounts`. The ledger's reader raises kubejob's own LedgerUnavailable.
"""

from dataclasses import dataclass

from kubejob.errors import Temporary


class QueueReadError(Temporary):
    """The queue's counts could not be read; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StatsNotReady(QueueReadError):
    """The broker answered, but without the queue's counts (yet)."""


@dataclass(frozen=True)
class QueueCounts:
    """The backlog's counts as the management API names them; `messages` (ready + unacked) is the depth.

    The rest says where they came from: the served `uploads`, the `queues` read (theirs, without
    repeats, and "<queue>.limit"), the uploads left out because they are paused or ended (cancelled
    or finished, their queue not deleted yet), the served queues that no longer existed, and those
    whose unacked messages the management API had no count for yet (counted as 0).
    """

    messages: int
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    uploads: int = 0
    queues: int = 0
    paused_uploads: int = 0
    ended_uploads: int = 0
    missing_queues: int = 0
    unacked_unknown: int = 0


EMPTY = QueueCounts(0, 0, 0, 0)
