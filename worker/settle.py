"""Settling recorded rows with the broker: ack, retry after a delay, or dead-letter.

Only rows whose outcome is in the ledger get here (worker.consumer sees to it). Rows finish
out of delivery order when several are handled at once, so `Acks` keeps the delivery tags
not yet settled: a run of successes at the head of them is settled by one `multiple` ack,
and a success behind a row still in its handler is acked alone, so that a slow row holds
back no ack but its own. A failed row's copy (to wait for its retry, or to "<queue>.dead") is
published at once and the row acked only once the broker confirmed the copy; meanwhile other
rows are delivered, handled and acked (`settle_confirmed`).
"""

import collections
import logging
import time
from typing import NamedTuple

from pika.adapters.blocking_connection import BlockingChannel
from prometheus_client import Counter

from kubejob import message
from kubejob.errors import Permanent
from kubejob.message import Delivery
from worker import metrics
from worker.copies import Copies
from worker.ledger import RowOutcome
from worker.settings import Settings

log = logging.getLogger(__name__)


class GaveUp(Permanent):
    """A row the worker will not start again: workers kept dying while handling it."""


class MessageTooLarge(Permanent):
    """A row whose body is over MAX_MESSAGE_BYTES: dropped as it arrived, so no attempt can read it."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the message body is {size} bytes, more than MAX_MESSAGE_BYTES ({limit}) "
                         "that a worker holds in memory")


class Outcome(NamedTuple):
    delivery: Delivery
    row: message.Row | None
    error: Exception | None
    already_recorded: bool = False  # a redelivery of a row the ledger has: acked, not handled again

    def final(self, max_attempts: int) -> bool:
        """A failure that is not tried again."""
        return (self.row is None or isinstance(self.error, GaveUp | MessageTooLarge)
                or self.row.attempt >= max_attempts)

    def recorded(self, max_attempts: int) -> RowOutcome | None:
        """What the ledger keeps of it; None for a row that will be tried again, or is recorded already."""
        row = self.row
        # A message that is not a row names no upload to count it in.
        if row is None or self.already_recorded:
            return None
        if self.error is None:
            return RowOutcome(row.upload_id, row.row, row.attempt)
        if not self.final(max_attempts):
            return None
        return RowOutcome(row.upload_id, row.row, row.attempt, error=describe(self.error), data=row.data)


HANDLING, SUCCEEDED, COPYING = 0, 1, 2  # where a delivered row not yet acked is


class Acks:
    """The delivery tags not yet settled, in delivery order, and which acks settle those that succeeded.

    A row whose copy is on its way to another queue (`copying`) is acked once the broker has
    confirmed the copy, a moment later: the successes behind it wait for it and go in the same
    multiple ack. Only a row still in its handler makes the successes behind it go alone.

    Delivery tags grow in delivery order on a channel, so comparing two says which came first;
    each tag passes through each deque below once, however many rows are open. It also counts
    the rows held of each upload (`held`): the consumer gives an upload's consumer a new prefetch
    only once none of its rows are held, so that the worker never holds more than its prefetch.
    """

    def __init__(self) -> None:
        self._order: collections.deque[int] = collections.deque()  # not yet covered by a multiple ack
        self._open: dict[int, int] = {}  # tag -> HANDLING, SUCCEEDED (awaiting its ack) or COPYING
        # Tags as delivered, dropped from the head once out of their handler: the head is the first row in one.
        self._handling: collections.deque[int] = collections.deque()
        self._upload: dict[int, str] = {}  # tag -> the upload the row is of
        self._held: collections.Counter[str] = collections.Counter()

    def delivered(self, tags: list[int], uploads: list[str]) -> None:
        self._order.extend(tags)
        self._handling.extend(tags)
        self._open.update(dict.fromkeys(tags, HANDLING))
        self._upload.update(zip(tags, uploads, strict=True))
        self._held.update(uploads)

    def held(self, upload: str) -> int:
        """Rows of `upload` delivered and not settled."""
        return self._held[upload]

    def returned(self, tags: list[int]) -> None:
        """The rows were given back to the broker (nacked): nothing acks them now."""
        for tag in tags:
            del self._open[tag]
            self._let_go(tag)

    def _let_go(self, tag: int) -> None:
        self._held[self._upload.pop(tag)] -= 1

    def copying(self, tag: int) -> None:
        """The row failed and its copy is published: it is acked with `succeeded` once the copy is confirmed."""
        self._open[tag] = COPYING

    def succeeded(self, tags: list[int]) -> tuple[int | None, list[int]]:
        """The tag to ack with `multiple` (the run of successes at the head), and the tags to ack one by one."""
        for tag in tags:
            self._open[tag] = SUCCEEDED
        multiple = None
        while self._order and self._open.get(self._order[0], SUCCEEDED) == SUCCEEDED:
            tag = self._order.popleft()
            if self._open.pop(tag, None) is not None:
                multiple = tag
                self._let_go(tag)
        while self._handling and self._open.get(self._handling[0]) != HANDLING:
            self._handling.popleft()
        # A success that waited behind copies alone can never get a row in its handler ahead of it: only these
        # tags can be acked alone.
        first = self._handling[0] if self._handling else None
        alone = [tag for tag in tags if first is not None and tag > first and self._open.get(tag) == SUCCEEDED]
        for tag in alone:
            del self._open[tag]
            self._let_go(tag)
        return multiple, alone


class Settler:
    """Settles recorded batches on the I/O thread's channel; failures are copied elsewhere through `copies`."""

    def __init__(self, channel: BlockingChannel, copies: Copies, settings: Settings) -> None:
        self._channel, self._copies, self._settings = channel, copies, settings
        self.acks = Acks()
        self.queue = settings.queue_name
        # Failed rows whose copy the broker has not confirmed yet, in publish order: (copy number, tag, metric).
        self.awaiting: collections.deque[tuple[int, int, Counter]] = collections.deque()
        # When the last row this worker sent to the retry queue is due back (time.monotonic()). On its way
        # back it is in neither queue for a moment, so counting them cannot tell that it still comes.
        self.retries_back_at = 0.0

    def settle(self, batch: list[Outcome]) -> int:
        """Ack each recorded row that succeeded, and publish the copy of each that failed; return how many
        succeeded. The failed ones are acked by `settle_confirmed` once their copies are confirmed."""
        successes, done, already_done = [], 0, 0
        failed: dict[bool, list[Outcome]] = {True: [], False: []}  # given up on, or to be retried
        for outcome in batch:
            if outcome.error is None:
                successes.append(outcome.delivery.tag)
                done, already_done = done + (not outcome.already_recorded), already_done + outcome.already_recorded
            else:
                final = outcome.final(self._settings.worker_max_attempts)
                failed[final].append(outcome)
                self.awaiting.append(self._copy_failure(outcome, final=final))
                self.acks.copying(outcome.delivery.tag)
        self._copies.flush()
        self._ack(successes)
        _log_failures(self.queue, dead=failed[True], retried=failed[False])
        metrics.DONE.inc(done)
        metrics.ALREADY_DONE.inc(already_done)
        return len(successes)

    def withdraw(self, *, back: list[Delivery], dropped: list[Delivery]) -> None:
        """Give rows that were never started `back` to the queue (their upload is paused), and ack those
        `dropped` unhandled (their upload is cancelled)."""
        for delivery in back:
            self._channel.basic_nack(delivery.tag, requeue=True)
        self.acks.returned([delivery.tag for delivery in back])
        self._ack([delivery.tag for delivery in dropped])
        metrics.PAUSED.inc(len(back))
        metrics.CANCELLED.inc(len(dropped))

    def settle_confirmed(self) -> int:
        """Ack the failed rows whose copies the broker has confirmed; return how many.

        Raises CopiesNotConfirmed, with none of the waiting rows acked, if the broker refused a copy.
        """
        self._copies.check(len(self.awaiting))
        tags = []
        while self.awaiting and self._copies.is_confirmed(self.awaiting[0][0]):
            _, tag, counted = self.awaiting.popleft()
            tags.append(tag)
            counted.inc()
        self._ack(tags)
        return len(tags)

    def _ack(self, tags: list[int]) -> None:
        multiple, alone = self.acks.succeeded(tags)
        if multiple is not None:
            self._channel.basic_ack(multiple, multiple=True)
        for tag in alone:
            self._channel.basic_ack(tag)

    def _copy_failure(self, outcome: Outcome, *, final: bool) -> tuple[int, int, Counter]:
        """Publish the row's copy to wait for its retry, or, when `final`, to "<queue>.dead"; return the copy's
        number, the row's delivery tag and the metric it counts in.

        The copy is confirmed before the original is acked: if we died between the two, the row
        would be handled twice, never lost. Not nack: on RabbitMQ 4.3 and later a nack does not
        count as a failed delivery, and our copy in "<queue>.dead" carries the error.
        """
        delivery, row, error = outcome.delivery, outcome.row, describe(outcome.error)
        if final:
            number = self._copies.publish(message.dead_letter_queue(self.queue), delivery.body,
                                          message.dead_properties(delivery.properties, error=error,
                                                                  dropped=delivery.dropped))
            return number, delivery.tag, metrics.DEAD_LETTERED
        assert row is not None
        delay = self._settings.retry_delay(row.attempt)
        # Back, after the delay, to the queue of the row's upload (the retry queue dead-letters it with this key).
        number = self._copies.publish(message.upload_queue(self.queue, row.upload_id), delivery.body,
                                      message.retry_properties(delivery.properties, attempt=row.attempt + 1,
                                                               delay_s=delay),
                                      exchange=message.retry_exchange(self.queue))
        self.retries_back_at = max(self.retries_back_at, time.monotonic() + delay)
        return number, delivery.tag, metrics.RETRIED


# Rows named by each failure log line; the ledger and "<queue>.dead" have every one.
LOGGED_ROWS = 5


def _log_failures(queue: str, *, dead: list[Outcome], retried: list[Outcome]) -> None:
    """One line for the rows of a batch given up on, one for those to be retried: how many, each distinct
    error with its count, and the first rows."""
    for outcomes, say, level in ((dead, "rows dead-lettered", logging.ERROR),
                                 (retried, "rows failed, will retry", logging.WARNING)):
        if outcomes:
            errors = collections.Counter(describe(o.error) for o in outcomes)
            first = [f"{o.row.upload_id}:{o.row.row}" if o.row else o.delivery.properties.message_id
                     for o in outcomes[:LOGGED_ROWS]]
            log.log(level, say, extra={"queue": queue, "rows": len(outcomes), "errors": dict(errors.most_common(5)),
                                       "first_rows": first, "attempt": max(o.row.attempt if o.row else 1
                                                                            for o in outcomes)})


def describe(error: Exception | None) -> str:
    return f"{type(error).__name__}: {error}"
