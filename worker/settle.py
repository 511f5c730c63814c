"""Settling recorded rows with the broker: ack, retry after a delay, or dead-letter.

Only rows whose outcome is in the ledger get here (worker.consumer sees to it). Rows finish
out of delivery order when several are handled at once, so `Acks` keeps the delivery tags
not yet settled: a run of successes at the head of them is settled by one `multiple` ack,
and a success behind a row still in its handler is acked alone, so that a slow row holds
back no ack but its own. The copies of a batch's failures are published together and their
confirms awaited once, before any of those rows is acked.
"""

import collections
import logging
import time
from collections.abc import Iterable
from typing import NamedTuple

from pika.adapters.blocking_connection import BlockingChannel
from prometheus_client import Counter

from kubejob import message
from kubejob.frames import Delivery
from worker import metrics
from worker.deliveries import ConfirmedCopies
from worker.ledger import RowOutcome
from worker.settings import Settings

log = logging.getLogger(__name__)


class GaveUp(Exception):
    """A row the worker will not start again: workers kept dying while handling it."""


class MessageTooLarge(Exception):
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


class Acks:
    """The delivery tags not yet settled, in delivery order, and which acks settle those that succeeded."""

    def __init__(self) -> None:
        self._order: collections.deque[int] = collections.deque()
        self._open: dict[int, bool] = {}  # tag -> succeeded, awaiting its ack

    def delivered(self, tags: list[int]) -> None:
        self._order.extend(tags)
        self._open.update(dict.fromkeys(tags, False))

    def settled(self, tag: int) -> None:
        """The row was acked by itself (a failure, copied elsewhere first)."""
        del self._open[tag]

    def succeeded(self, tags: Iterable[int]) -> tuple[int | None, list[int]]:
        """The tag to ack with `multiple` (the run of successes at the head), and the tags to ack one by one."""
        tags = list(tags)
        for tag in tags:
            self._open[tag] = True
        multiple = None
        while self._order and self._open.get(self._order[0], True):
            tag = self._order.popleft()
            if self._open.pop(tag, False):
                multiple = tag
        alone = [tag for tag in tags if self._open.pop(tag, False)]
        return multiple, alone


class Settler:
    """Settles recorded batches on the I/O thread's channel; failures are copied elsewhere through `copies`."""

    def __init__(self, channel: BlockingChannel, copies: ConfirmedCopies, settings: Settings) -> None:
        self._channel, self._copies, self._settings = channel, copies, settings
        self.acks = Acks()
        self.queue = settings.queue_name
        # When the last row this worker sent to the retry queue is due back (time.monotonic()). On its way
        # back it is in neither queue for a moment, so counting them cannot tell that it still comes.
        self.retries_back_at = 0.0

    def settle(self, batch: list[Outcome]) -> int:
        """Ack, retry or dead-letter each recorded row; return how many succeeded.

        Raises CopiesNotConfirmed, with none of the failed rows acked, if the broker refused a copy.
        """
        successes, failures, done, already_done = [], [], 0, 0
        for outcome in batch:
            if outcome.error is None:
                successes.append(outcome.delivery.tag)
                done, already_done = done + (not outcome.already_recorded), already_done + outcome.already_recorded
            else:
                failures.append((outcome.delivery.tag, self._copy_failure(outcome)))
        if failures:
            self._copies.confirm()
        for tag, counted in failures:
            self._channel.basic_ack(tag)
            self.acks.settled(tag)
            counted.inc()
        multiple, alone = self.acks.succeeded(successes)
        if multiple is not None:
            self._channel.basic_ack(multiple, multiple=True)
        for tag in alone:
            self._channel.basic_ack(tag)
        metrics.DONE.inc(done)
        metrics.ALREADY_DONE.inc(already_done)
        return len(successes)

    def _copy_failure(self, outcome: Outcome) -> Counter:
        """Publish the row's copy to wait for its retry, or to "<queue>.dead"; return the metric it counts in.

        The copy is confirmed before the original is acked: if we died between the two, the row
        would be handled twice, never lost. Not nack: on RabbitMQ 4.3 and later a nack does not
        count as a failed delivery, and our copy in "<queue>.dead" carries the error.
        """
        delivery, row, error = outcome.delivery, outcome.row, describe(outcome.error)
        fields = {"queue": self.queue, "error": error, "message_id": delivery.properties.message_id,
                  "attempt": row.attempt if row else None}
        if outcome.final(self._settings.worker_max_attempts):
            where = {"upload_id": row.upload_id, "row": row.row} if row else {}
            log.error("giving up on row, dead-lettered", extra=fields | where)
            self._copies.publish(message.dead_letter_queue(self.queue), delivery.body, message.dead_properties(
                delivery.properties, error=error, dropped=delivery.dropped))
            return metrics.DEAD_LETTERED
        assert row is not None
        delay = self._settings.retry_delay(row.attempt)
        log.warning("row failed, will retry", extra=fields | {"retry_in_s": delay})
        self._copies.publish(message.retry_queue(self.queue), delivery.body, message.retry_properties(
            delivery.properties, attempt=row.attempt + 1, delay_s=delay))
        self.retries_back_at = max(self.retries_back_at, time.monotonic() + delay)
        return metrics.RETRIED


def describe(error: Exception | None) -> str:
    return f"{type(error).__name__}: {error}"
