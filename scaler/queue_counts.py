"""What a reading of the queue gives, and the errors of every source that reads it.

Both readers (scaler.queue_depth, the management API; scaler.queue_live, AMQP) return
`QueueCounts` and raise `QueueReadError`, so the loop handles one family whatever the source.
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
    """A queue's counts as the management API names them; `messages` (ready + unacked) is the depth."""

    messages: int
    messages_ready: int
    messages_unacknowledged: int
    consumers: int


EMPTY = QueueCounts(0, 0, 0, 0)
