"""Consumes the queue: a row is acked only after its handler has returned and its outcome is in the ledger.

The handler runs on a thread of its own, so this thread keeps the connection's I/O going
(heartbeats, deliveries, acks) however long a row takes. Rows are handled one at a time,
in delivery order, which is what lets one `multiple` ack settle a run of successes. The
outcomes finished since the last batch are recorded in one ledger transaction before any
of them is acked: a crash in between costs a redelivery, never an outcome. That write runs
on a third thread, one batch at a time, so rows keep being delivered and handled meanwhile
and the next batch grows by what finished during the write.

Rows that fail: a handler that raises, or runs past WORKER_ROW_TIMEOUT_SECONDS, costs the row
an attempt; it waits in "<queue>.retry" for a delay that doubles with each attempt, and after
WORKER_MAX_ATTEMPTS goes to "<queue>.dead" with the last error. A row that kills the process
comes back redelivered: a redelivered row without an outcome is started only once what came
before it is recorded, and each such start is counted in the ledger, so the row that keeps
killing workers is told from the rows that were merely held alongside it and given up on.
A worker starts with a prefetch of 1 and widens it at the first row that is not a
redelivery, so that after a death the redelivered rows come back one at a time.
"""

import collections
import functools
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass

import pika
import pika.exceptions

from kubejob import message
from worker import dead_letters
from worker.handlers import Handler
from worker.ledger import Ledger, LedgerUnavailable, RowOutcome
from worker.settings import Settings

log = logging.getLogger(__name__)


class BrokerError(Exception):
    """The connection to RabbitMQ failed; unacked rows go back to the queue."""


class LedgerDown(Exception):
    """PostgreSQL stayed unreachable for WORKER_DATABASE_RETRY_SECONDS; unacked rows go back to the queue."""


class QueueMismatch(Exception):
    """The queue exists with other arguments (a classic queue from before quorum queues); no retry helps."""


class RowTimedOut(Exception):
    """A handler outlived WORKER_ROW_TIMEOUT_SECONDS; its thread cannot be stopped, so the process ends."""


class GaveUp(Exception):
    """A row the worker will not start again: workers kept dying while handling it."""


@dataclass(frozen=True)
class Delivery:
    tag: int
    properties: pika.BasicProperties
    body: bytes
    redelivered: bool


@dataclass(frozen=True)
class Outcome:
    delivery: Delivery
    row: message.Row | None
    error: Exception | None
    already_recorded: bool = False  # a redelivery of a row the ledger has: acked, not handled again

    def final(self, max_attempts: int) -> bool:
        """A failure that is not tried again."""
        return self.row is None or isinstance(self.error, GaveUp) or self.row.attempt >= max_attempts


class Retry:
    """When to try an unreachable ledger again: doubling waits, and a deadline to give up at."""

    def __init__(self, *, give_up_after_s: float, first_wait_s: float = 0.5, max_wait_s: float = 5.0) -> None:
        self._give_up_after_s, self._first_wait_s, self._max_wait_s = give_up_after_s, first_wait_s, max_wait_s
        self.failing_since: float | None = None
        self._wait_s, self._next = first_wait_s, 0.0

    def due(self, now: float) -> bool:
        return now >= self._next

    def failed(self, now: float) -> bool:
        """Note a failure; True when it has failed for longer than allowed."""
        if self.failing_since is None:
            self.failing_since, self._wait_s = now, self._first_wait_s
        self._next, self._wait_s = now + self._wait_s, min(self._wait_s * 2, self._max_wait_s)
        return now - self.failing_since >= self._give_up_after_s

    def succeeded(self) -> None:
        self.failing_since, self._next = None, 0.0


class Consumer:
    """Drains one queue until it has been empty for WORKER_IDLE_SECONDS, or SIGTERM."""

    def __init__(self, settings: Settings, handler: Handler, ledger: Ledger) -> None:
        self.settings, self.handler, self.ledger = settings, handler, ledger
        self._ledger_retry = Retry(give_up_after_s=settings.worker_database_retry_seconds)
        self.queue = settings.queue_name
        self.stopping = threading.Event()
        self._todo: queue.Queue[Delivery | None] = queue.Queue()
        self._done: collections.deque[Outcome] = collections.deque()
        self._batches: queue.Queue[list[Outcome] | None] = queue.Queue()
        self._writing = False  # a batch is with the ledger thread
        self._ledger_error: LedgerUnavailable | None = None  # the ledger has stayed down too long
        self._in_flight = 0
        self._handler_idle = threading.Event()
        # The row in the handler and when it started; the lock keeps a late return and a time-out apart.
        self._current: tuple[Delivery, message.Row, float] | None = None
        self._current_lock = threading.Lock()
        self._timed_out: RowTimedOut | None = None
        self._narrow, self._widen_due = True, False  # prefetch 1 until the first row that is not a redelivery
        self.handled = 0

    def run(self) -> None:
        """Consume until idle or stopped; raises BrokerError if the connection fails."""
        try:
            self._connection = pika.BlockingConnection(self.settings.connection_parameters(
                heartbeat=self.settings.worker_heartbeat_seconds, connection_attempts=3, retry_delay=2,
            ))
            self._channel = self._connection.channel()
            self._declare()
            self._move_limit_queue()
            self._consume()
        except pika.exceptions.AMQPError as exc:
            # pika's repr carries the reason (its str is often empty).
            where = f"{self.settings.rabbitmq_host}:{self.settings.rabbitmq_port}"
            raise BrokerError(f"RabbitMQ at {where}: {exc!r}") from None
        finally:
            self._todo.put(None)
            self._batches.put(None)

    def _declare(self) -> None:
        for name, arguments in message.declarations(self.queue):
            try:
                self._channel.queue_declare(name, durable=True, arguments=arguments)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 406:  # PRECONDITION_FAILED: declared before with other arguments
                    raise QueueMismatch(message.migration_hint(name, exc.reply_text)) from None
                raise
        self._channel.basic_qos(prefetch_count=1)  # widened at the first row that is not a redelivery
        self._channel.confirm_delivery()

    def _move_limit_queue(self) -> None:
        try:
            moved = dead_letters.move_limit_queue(self._channel, self.queue, self.ledger)
        except LedgerUnavailable as exc:
            log.warning("ledger unavailable, rows the broker dead-lettered wait", extra={"error": str(exc)})
            return
        if moved:
            log.info("rows the broker dead-lettered recorded as failed", extra={"queue": self.queue, "rows": moved})

    def _consume(self) -> None:
        consumer_tag = self._channel.basic_consume(self.queue, self._on_message)
        threading.Thread(target=self._work, name="handler", daemon=True).start()
        threading.Thread(target=self._write_batches, name="ledger", daemon=True).start()
        last_activity = time.monotonic()
        while not self.stopping.is_set():
            self._connection.process_data_events(time_limit=0.5)
            if self._widen_due:
                consumer_tag = self._widen(consumer_tag)
            if self._check_row_time():
                break
            if self._record_when_due() or self._in_flight:
                last_activity = time.monotonic()
            elif time.monotonic() - last_activity >= self.settings.worker_idle_seconds:
                if self._retries_waiting():
                    last_activity = time.monotonic()  # they come back into the queue after their delay
                    continue
                self._move_limit_queue()
                log.info("queue empty, exiting", extra={"queue": self.queue, "handled": self.handled})
                break
        self._channel.basic_cancel(consumer_tag)
        if self._timed_out is not None:
            self._settle_what_finished()
        elif self.stopping.is_set():
            self._finish_in_hand()
        self._connection.close()
        if self._timed_out is not None:
            raise self._timed_out

    def _retries_waiting(self) -> bool:
        """Rows wait in the retry queue, or have just come back from it and not reached us yet."""
        return any(self._channel.queue_declare(name, passive=True).method.message_count
                   for name in (message.retry_queue(self.queue), self.queue))

    def _widen(self, consumer_tag: str) -> str:
        """Take the full prefetch: a new consumer, since the broker applies a prefetch to consumers made after it."""
        self._widen_due = False
        self._channel.basic_cancel(consumer_tag)
        self._channel.basic_qos(prefetch_count=self.settings.worker_prefetch)
        return self._channel.basic_consume(self.queue, self._on_message)

    def _check_row_time(self) -> bool:
        """Past the row time limit: count it as a failed attempt of that row and stop; True if so."""
        limit = self.settings.worker_row_timeout_seconds
        with self._current_lock:
            if self._current is None or time.monotonic() - self._current[2] < limit:
                return False
            delivery, row, _ = self._current
            self._current = None
            self._timed_out = RowTimedOut(f"the handler ran longer than WORKER_ROW_TIMEOUT_SECONDS ({limit:g} s)")
            self._done.append(Outcome(delivery, row, self._timed_out))
        log.error("row outlived the time limit, exiting",
                  extra={"queue": self.queue, "message_id": delivery.properties.message_id, "attempt": row.attempt,
                         "timeout_s": limit, "returned": self._in_flight - len(self._done)})
        return True

    def _settle_what_finished(self) -> None:
        """Record and settle every finished row, the timed-out one included; the rest go back on close."""
        deadline = time.monotonic() + self.settings.worker_shutdown_seconds
        while (self._writing or self._done) and time.monotonic() < deadline:
            self._record_when_due()
            self._connection.process_data_events(time_limit=0.2)

    def _finish_in_hand(self) -> None:
        """On SIGTERM: give the row in hand time to finish; the broker requeues the rest on close."""
        self._todo.put(None)
        deadline = time.monotonic() + self.settings.worker_shutdown_seconds
        while (not self._handler_idle.is_set() or self._writing or self._done) and time.monotonic() < deadline:
            self._connection.process_data_events(time_limit=0.2)
            self._record_when_due()
        log.info("stopped on SIGTERM",
                 extra={"queue": self.queue, "handled": self.handled, "returned": self._in_flight})

    def _on_message(
        self, _channel: object, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties, body: bytes
    ) -> None:
        self._in_flight += 1
        if self._narrow and not method.redelivered:
            self._narrow, self._widen_due = False, True
        self._todo.put(Delivery(method.delivery_tag, properties, body, bool(method.redelivered)))

    def _work(self) -> None:
        while (delivery := self._todo.get()) is not None:
            if self.stopping.is_set():
                continue  # not started, so not acked: the broker requeues it
            row, error, recorded = None, None, False
            try:
                row = message.decode(delivery.body, delivery.properties)
                recorded = delivery.redelivered and self.ledger.has(row.upload_id, row.row)
                if not recorded:
                    if delivery.redelivered:
                        self._start_redelivered(row)
                    with self._current_lock:
                        self._current = (delivery, row, time.monotonic())
                    self.handler(row.data)
            except Exception as exc:
                error = exc
            with self._current_lock:
                if self._timed_out is not None:
                    break  # this row's outcome is already the time-out; the process is ending
                self._current = None
                self._done.append(Outcome(delivery, row, error, recorded))
            try:
                self._connection.add_callback_threadsafe(lambda: None)  # wake the I/O loop to ack now
            except pika.exceptions.ConnectionWrongStateError:
                break  # the connection closed under us: the broker requeues what was not acked
        self._handler_idle.set()

    def _start_redelivered(self, row: message.Row) -> None:
        """Count this start of a row the broker gave back; raise GaveUp if workers kept dying on it.

        The rows handled before it are recorded first, so that if it kills this worker too,
        none of them is handled again and none but it has its count raised.
        """
        while (self._done or self._writing) and not self.stopping.is_set():
            time.sleep(0.005)
        earlier = self.ledger.start_redelivered(row.upload_id, row.row)
        # Its first delivery was not counted: nothing then told it from the others.
        if earlier >= max(1, self.settings.worker_max_attempts - 1):
            raise GaveUp(f"the worker died while handling it {earlier + 1} times (a crash, a kill, running out "
                         "of memory, or a pod stopped); WORKER_MAX_ATTEMPTS is "
                         f"{self.settings.worker_max_attempts}")

    def _record_when_due(self) -> bool:
        """Hand what has finished to the ledger thread, unless a batch is there or a retry is not due."""
        if self._ledger_error is not None:
            raise LedgerDown(str(self._ledger_error))
        if self._writing or not self._done or not self._ledger_retry.due(time.monotonic()):
            return False
        # The handler thread only appends, so the first len() outcomes are ours to take.
        batch = [self._done.popleft() for _ in range(len(self._done))]
        self._writing = True
        self._batches.put(batch)
        return True

    def _write_batches(self) -> None:
        """The ledger thread: record each batch, then have the I/O thread settle it."""
        while (batch := self._batches.get()) is not None:
            error = None
            try:
                self.ledger.record([o for o in map(self._recorded_outcome, batch) if o is not None],
                                   redelivered=collections.Counter(o.row.upload_id for o in batch
                                                                   if o.already_recorded and o.row))
            except LedgerUnavailable as exc:
                error = exc
            try:
                self._connection.add_callback_threadsafe(functools.partial(self._recorded, batch, error))
            except pika.exceptions.ConnectionWrongStateError:
                return  # the connection closed under us: the broker requeues what was not acked

    def _recorded(self, batch: list[Outcome], error: LedgerUnavailable | None) -> None:
        """On the I/O thread: settle a recorded batch, or keep it for the next try."""
        self._writing, now = False, time.monotonic()
        if error is not None:
            self._done.extendleft(reversed(batch))
            if self._ledger_retry.failing_since is None:
                log.warning("ledger unavailable, acking nothing", extra={"error": str(error), "held": self._in_flight})
            if self._ledger_retry.failed(now):
                self._ledger_error = error
            return
        if self._ledger_retry.failing_since is not None:
            log.info("ledger back", extra={"down_s": round(now - self._ledger_retry.failing_since, 1)})
            self._ledger_retry.succeeded()
        self._settle(batch)

    def _settle(self, batch: list[Outcome]) -> None:
        """Ack, retry or dead-letter each recorded row, in delivery order."""
        last_success = 0
        for outcome in batch:
            self._in_flight -= 1
            if outcome.error is None:
                last_success, self.handled = outcome.delivery.tag, self.handled + 1
                continue
            if last_success:
                self._channel.basic_ack(last_success, multiple=True)
                last_success = 0
            self._settle_failure(outcome)
        if last_success:
            self._channel.basic_ack(last_success, multiple=True)

    def _recorded_outcome(self, outcome: Outcome) -> RowOutcome | None:
        """What the ledger keeps of a finished row; None for one that will be tried again, or is recorded."""
        row = outcome.row
        # A message that is not a row names no upload to count it in.
        if row is None or outcome.already_recorded:
            return None
        if outcome.error is None:
            return RowOutcome(row.upload_id, row.row, row.attempt)
        if not outcome.final(self.settings.worker_max_attempts):
            return None
        return RowOutcome(row.upload_id, row.row, row.attempt, error=_describe(outcome.error), data=row.data)

    def _settle_failure(self, outcome: Outcome) -> None:
        """Retry the row after its delay, or give up on it; each copy is published before the original is acked.

        If we died between the two, the row would be handled twice, never lost. Not nack: on
        RabbitMQ 4.3 and later a nack does not count as a failed delivery, and our copy in
        "<queue>.dead" carries the error.
        """
        delivery, row, error = outcome.delivery, outcome.row, _describe(outcome.error)
        fields = {"queue": self.queue, "error": error, "message_id": delivery.properties.message_id,
                  "attempt": row.attempt if row else None}
        if outcome.final(self.settings.worker_max_attempts):
            where = {"upload_id": row.upload_id, "row": row.row} if row else {}
            log.error("giving up on row, dead-lettered", extra=fields | where)
            target, properties = message.dead_letter_queue(self.queue), message.dead_properties(
                delivery.properties, error=error)
        else:
            assert row is not None
            delay = self.settings.retry_delay(row.attempt)
            log.warning("row failed, will retry", extra=fields | {"retry_in_s": delay})
            target, properties = message.retry_queue(self.queue), message.retry_properties(
                delivery.properties, attempt=row.attempt + 1, delay_s=delay)
        self._channel.basic_publish("", target, delivery.body, properties, mandatory=True)
        self._channel.basic_ack(delivery.tag)


def _describe(error: Exception | None) -> str:
    return f"{type(error).__name__}: {error}"


def install_sigterm(consumer: Consumer) -> None:
    signal.signal(signal.SIGTERM, lambda _signum, _frame: consumer.stopping.set())
