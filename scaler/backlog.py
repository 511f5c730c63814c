"""The backlog the scaler serves: the rows in the queues of the uploads being served, and "<queue>.limit".

Each upload has a queue of its own (kubejob.message.upload_queue). Which of them hold work is the
ledger's fact (kubejob.ledger.open_uploads): a paused upload's rows wait in its queue untouched,
and a cancelled or finished upload's queue may still hold rows until it is deleted; none of them
wants a worker, so none of them counts. Of the served uploads' queues the depth is ready messages,
read live over AMQP, plus unacknowledged ones, from the management API and only for a queue that
has consumers (without one, nothing is unacked). "<queue>.limit" adds its ready rows: rows the
broker dead-lettered at their delivery limit, which only a worker records and moves on.

`served` and `total` are pure; `Backlog` reads the three sources in that order each poll.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubejob import message
from kubejob.ledger import OpenUpload
from scaler.queue_counts import QueueCounts
from scaler.queue_live import Live


@dataclass(frozen=True)
class Served:
    """What the ledger says to serve: the served uploads' queues, each once, oldest upload first; what was left out."""

    queues: tuple[str, ...]
    uploads: int
    paused: int
    ended: int  # cancelled or finished, their queue not deleted yet


def served(uploads: Sequence[OpenUpload]) -> Served:
    """The queues to read of the open `uploads` (those of this QUEUE_NAME): the queues of the uploads served now."""
    chosen = [upload for upload in uploads if upload.served]
    paused = sum(1 for upload in uploads if upload.paused and not (upload.cancelled or upload.finished))
    return Served(tuple(upload.queue for upload in chosen), uploads=len(chosen), paused=paused,
                  ended=len(uploads) - len(chosen) - paused)


def total(what: Served, *, limit_queue: str, live: Mapping[str, Live],
          unacked: Mapping[str, int | None]) -> QueueCounts:
    """The depth of `what`, from the live counts of the queues that exist and the listed unacked counts.

    `consumers` is the most any one queue has: each worker consumes every served upload's queue, so
    that is about the number of workers, where a sum would count each of them once per upload.
    """
    found = [queue for queue in what.queues if queue in live]
    limited = live.get(limit_queue, Live(0, 0))
    ready = sum(live[queue].ready for queue in found) + limited.ready
    attended = [queue for queue in found if live[queue].consumers]
    held = sum(unacked.get(queue) or 0 for queue in attended)
    consumers = max([live[queue].consumers for queue in found] + [limited.consumers])
    return QueueCounts(
        ready + held, ready, held, consumers, uploads=what.uploads, queues=len(what.queues) + 1,
        paused_uploads=what.paused, ended_uploads=what.ended, missing_queues=len(what.queues) - len(found),
        unacked_unknown=sum(1 for queue in attended if unacked.get(queue) is None),
    )


class UploadsReader(Protocol):
    """scaler.uploads.OpenUploads; raises LedgerUnavailable."""

    def read(self) -> list[OpenUpload]: ...

    def close(self) -> None: ...


class LiveReader(Protocol):
    """scaler.queue_live.LiveQueues; raises QueueReadError."""

    def read(self, queues: list[str]) -> dict[str, Live]: ...

    def close(self) -> None: ...


class UnackedReader(Protocol):
    """scaler.queue_depth.ManagementClient; raises QueueReadError."""

    def unacked(self, prefix: str) -> dict[str, int | None]: ...

    def close(self) -> None: ...


class Backlog:
    """The scaler's QueueReader: the ledger says which queues, AMQP and the management API what they hold."""

    def __init__(self, *, queue: str, uploads: UploadsReader, live: LiveReader, management: UnackedReader) -> None:
        self._queue, self._uploads, self._live, self._management = queue, uploads, live, management

    def read(self) -> QueueCounts:
        """The backlog now; raises LedgerUnavailable or QueueReadError when a source fails or is silent."""
        what = served(self._uploads.read())
        limit_queue = message.limit_queue(self._queue)
        live = self._live.read([*what.queues, limit_queue])
        # A queue declared a moment ago (a quorum queue's first statistics take seconds) does not wait for the
        # management API before its first Job: without a consumer, the live answer is complete.
        consumed = any(live[queue].consumers for queue in what.queues if queue in live)
        unacked = self._management.unacked(message.upload_queue(self._queue, "")) if consumed else {}
        return total(what, limit_queue=limit_queue, live=live, unacked=unacked)

    def close(self) -> None:
        self._uploads.close()
        self._live.close()
        self._management.close()
