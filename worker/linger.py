"""When the I/O thread waits a moment, so that rows arrive, and finish, in batches.

A worker that shares a shallow queue with others, while an upload is still being published,
gets its rows one or two at a time, and each is then read, handled, recorded in the ledger
and acked on its own: per row that costs the worker, RabbitMQ and PostgreSQL together more
CPU than the same rows in batches (`python -m bench trickle` measures it). Waiting
WORKER_LINGER_SECONDS after a delivery of fewer than half the prefetch gathers a batch that
is handled, recorded in one transaction and acked at once. It waits only while the queue has
no row ready behind that delivery (read from the broker at most once every READ_EVERY_S), so
a worker with a backlog never waits.

The same holds for rows finishing one by one, as they do when WORKER_CONCURRENCY handlers
wait on I/O: each finished row recorded and acked on its own makes the broker deliver one
row in its place, and so on. A finished row waits up to WORKER_LINGER_SECONDS for the
handlers still running, until half the prefetch has finished (Settings.batch_rows), and
those are recorded and acked at once: the larger the batch, the less CPU each row costs the
worker, RabbitMQ and PostgreSQL, at the same rows per second (`python -m bench io` measures it).
"""

from collections.abc import Callable

READ_EVERY_S = 1.0


class Linger:
    """Whether to wait before handing out what one pass of the I/O loop received."""

    def __init__(self, seconds: float, prefetch: int) -> None:
        self.seconds, self._prefetch = seconds, prefetch
        self._read_at, self._empty = float("-inf"), False

    def due(self, now: float, arrived: int, ready: Callable[[], int]) -> bool:
        """Wait `seconds` now: a few rows came, and the queue had none `ready` when last read."""
        if self.seconds <= 0 or not 0 < arrived < self._prefetch // 2:
            return False
        if now - self._read_at >= READ_EVERY_S:
            self._read_at, self._empty = now, ready() == 0
        return self._empty


def gather_for(seconds: float, batch_rows: int, *, finished: int, running: bool, since: float, now: float) -> float:
    """How much longer the rows `finished` since `since` wait for the handlers still `running`; 0: record them now."""
    if finished >= batch_rows or not running:
        return 0.0
    return max(0.0, since + seconds - now)
