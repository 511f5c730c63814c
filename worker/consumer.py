"""Consumes the queue: a row is acked only after its handler has returned and its outcome is in the ledger.

This thread keeps the connection's I/O going (heartbeats, deliveries, acks) while the rows
are handled elsewhere (worker.rows), up to WORKER_CONCURRENCY at once. The outcomes finished
since the last batch are recorded in one ledger transaction before any of them is settled
(worker.settle): a crash in between costs a redelivery, never an outcome. That write runs on
a thread of its own, one batch at a time, so rows keep being delivered and handled meanwhile
and the next batch grows by what finished during the write.

A few rows arriving on their own, and rows finishing while other handlers still run, are
waited on for up to WORKER_LINGER_SECONDS, so that they are handled, recorded and acked in a
batch (worker.linger).

It consumes the queue of every upload the ledger has open and not paused or cancelled (read on
a thread of its own as PostgreSQL notifies a change, and every SERVE_EVERY_S), each with its
share of the prefetch (worker.consumers); the rows held are started in the fair share's turns
(worker.rows). Once an upload is paused, its rows held and not started go back to its queue
(nacked, requeued); once it is cancelled, they are acked unhandled: the producer deletes its
queue soon after.

A worker starts with a prefetch of 1 for each upload and widens it at the first row that is not
a redelivery, so that after a death the redelivered rows come back one at a time.

A message whose body is over MAX_MESSAGE_BYTES is dropped as it arrives (worker.deliveries):
its row is recorded as failed and copied to "<queue>.dead" with an empty body, so that body
is not kept anywhere. A message still arriving counts as work, never as an empty queue.
"""

import collections
import contextlib
import functools
import logging
import queue
import signal
import threading
import time

import pika
import pika.exceptions

from kubejob import message, pika_fast
from kubejob.errors import BrokerUnavailable, LedgerUnavailable, Permanent
from kubejob.ledger import OpenUpload, Retry
from kubejob.message import Delivery, upload_of
from worker import dead_letters
from worker.consumers import Consumers
from worker.copies import ConfirmedCopies, CopiesNotConfirmed, PlainCopies
from worker.deliveries import Deliveries, PlainDeliveries, kept
from worker.handlers import Handler
from worker.ledger import Ledger
from worker.linger import Linger, gather_for
from worker.rows import Rows
from worker.settings import Settings
from worker.settle import Outcome, Settler

log = logging.getLogger(__name__)

POLL_S = 0.5  # the longest the I/O loop waits for the broker before it checks on the rows
# How often the uploads open are read besides when PostgreSQL notifies a change: no row of an upload is started
# more than a second after it was paused or cancelled, even if a notification is lost.
SERVE_EVERY_S = 0.5
# Lingering asks the broker whether rows are ready behind those that came; past this many queues consumed that
# costs more round trips than a batch saves, and a worker serving so many uploads is seldom short of rows.
LINGER_MAX_QUEUES = 8


class QueueMismatch(Permanent):
    """The queue exists with other arguments (a classic queue from before quorum queues); no retry helps."""


class Consumer:
    """Drains the queues of the uploads served until they have been empty for WORKER_IDLE_SECONDS, or SIGTERM."""

    def __init__(self, settings: Settings, handler: Handler, ledger: Ledger) -> None:
        self.settings, self.ledger = settings, ledger
        self._ledger_retry = Retry(give_up_after_s=settings.worker_database_retry_seconds)
        self.queue = settings.queue_name
        self.stopping = threading.Event()
        self._rows = Rows(settings, handler, ledger, wake=self._wake, stopping=self.stopping)
        self._batches: queue.Queue[list[Outcome] | None] = queue.Queue()
        self._ledger_error: LedgerUnavailable | None = None  # the ledger has stayed down too long
        self._in_flight = 0
        self._arrived: list[Delivery] = []  # delivered in this pass of the I/O loop, handed on after it
        self._narrow, self._widen_due = True, False  # prefetch 1 until the first row that is not a redelivery
        self._stopped: set[str] = set()  # uploads paused or cancelled: their rows are not started
        self._taken_back: list[Delivery] = []  # their rows, delivered and not started, to give back or drop
        self._cancelled: set[str] = set()
        self._served: list[OpenUpload] = []
        self._ended = threading.Event()
        self._linger = Linger(settings.worker_linger_seconds, settings.prefetch)
        self._finished_since: float | None = None  # when the I/O thread first saw the rows that wait to be taken
        self.handled = 0

    def run(self) -> None:
        """Consume until idle or stopped.

        Raises BrokerUnavailable if the connection fails, LedgerUnavailable once the ledger has failed for
        WORKER_DATABASE_RETRY_SECONDS (either way the unacked rows go back to the queue), QueueMismatch.
        """
        try:
            self._connection = pika.BlockingConnection(self.settings.connection_parameters(
                heartbeat=self.settings.worker_heartbeat_seconds, connection_attempts=3, retry_delay=2,
            ))
            self._channel = self._connection.channel()
            self._probe = self._connection.channel()  # for passive declares: a 404 closes it, not the consumers'
            self._declare()
            fast = pika_fast.active(self.settings.kubejob_pika_fast)
            self._copies = ConfirmedCopies(self._channel, on_confirm=self._wake) if fast else PlainCopies(self._channel)
            self._settler = Settler(self._channel, self._copies, self.settings)
            self._move_limit_queue()
            self._deliveries = Deliveries(self._connection, self._channel, self._on_deliveries,
                                          max_body_bytes=self.settings.max_message_bytes) if fast else \
                PlainDeliveries(self._channel)
            self._consumers = Consumers(
                self._deliveries, prefetch=self.settings.prefetch,
                qos=lambda prefetch: self._channel.basic_qos(prefetch_count=prefetch),
                declare=lambda queue: self._declare_queue(queue, message.queue_arguments(self.queue)),
                on_message=self._on_message)
            self._serve(self.ledger.open_uploads(self.queue))
            self._consume()
        except pika.exceptions.AMQPError as exc:
            # pika's repr carries the reason (its str is often empty).
            where = f"{self.settings.rabbitmq_host}:{self.settings.rabbitmq_port}"
            raise BrokerUnavailable(f"RabbitMQ at {where}: {exc!r}") from exc
        except CopiesNotConfirmed as exc:
            # The rows it copies are unacked: closing the connection gives them back to the queue.
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._connection.close()
            raise BrokerUnavailable(f"copies of failed rows not confirmed: {exc}") from exc
        finally:
            self._ended.set()
            self._rows.close()
            self._batches.put(None)

    def _declare(self) -> None:
        for name, arguments in message.declarations(self.queue):
            self._declare_queue(name, arguments)
        retry = message.retry_exchange(self.queue)
        self._channel.exchange_declare(retry, exchange_type="fanout", durable=True)
        self._channel.queue_bind(message.retry_queue(self.queue), retry)

    def _declare_queue(self, name: str, arguments: dict[str, str | int]) -> None:
        try:
            self._channel.queue_declare(name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:  # PRECONDITION_FAILED: declared before with other arguments
                raise QueueMismatch(message.migration_hint(name, exc.reply_text)) from exc
            raise

    def _move_limit_queue(self) -> None:
        try:
            moved = dead_letters.move_limit_queue(self._channel, self._copies, self.queue, self.ledger)
        except LedgerUnavailable as exc:
            log.warning("ledger unavailable, rows the broker dead-lettered wait", extra={"error": str(exc)})
            return
        if moved:
            log.info("rows the broker dead-lettered recorded as failed", extra={"queue": self.queue, "rows": moved})

    def _consume(self) -> None:
        self._rows.start()
        threading.Thread(target=self._write_batches, name="ledger", daemon=True).start()
        threading.Thread(target=self._watch_uploads, name="uploads", daemon=True).start()
        self._consumers.adjust(self._settler.acks.held)
        last_activity = time.monotonic()
        while not self.stopping.is_set():
            self._connection.process_data_events(time_limit=self._record_in(time.monotonic()))
            self._in_flight -= self._settler.settle_confirmed()
            if not self._narrow and self._linger.due(time.monotonic(), len(self._arrived), self._ready_consumed):
                time.sleep(self._linger.seconds)
                self._connection.process_data_events(time_limit=0)
            if self._arrived:
                self._rows.submit(self._arrived)
                self._arrived = []
            if self._widen_due:
                self._widen_due = False
                self._consumers.serve(self._served, narrow=False)
            if self._consumers.due:
                self._consumers.adjust(self._settler.acks.held)
            if self._taken_back:
                self._give_back()
            if self._rows.overdue(time.monotonic()):
                break
            now = time.monotonic()
            # A message still arriving (a large one takes many receives) is work, not an empty queue.
            if self._record_when_due() or self._in_flight or self._deliveries.receiving:
                last_activity = now
            elif idle_for(now, last_activity, self._settler.retries_back_at) >= self.settings.worker_idle_seconds:
                # A row may have come back from its delay, and reached us, during that check.
                if self._retries_waiting() or self._in_flight:
                    last_activity = time.monotonic()  # they come back into the queue after their delay
                    continue
                self._move_limit_queue()
                log.info("queue empty, exiting", extra={"queue": self.queue, "handled": self.handled,
                                                        "uploads_paused": len(self._stopped - self._cancelled)})
                break
        self._consumers.cancel_all()
        if self._rows.timed_out is not None:
            self._settle_what_finished()
        elif self.stopping.is_set():
            self._finish_in_hand()
        self._connection.close()
        if self._rows.timed_out is not None:
            raise self._rows.timed_out

    def _ready(self, name: str) -> int:
        """Rows ready in queue `name`, not counting those delivered and not yet acked; 0 if it is gone."""
        try:
            return self._probe.queue_declare(name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._probe = self._connection.channel()
            if exc.reply_code == 404:
                return 0
            raise

    def _ready_consumed(self) -> int:
        """Rows ready in the queues consumed (for lingering): many queues count as not empty."""
        queues = self._consumers.consumed()
        return 1 if len(queues) > LINGER_MAX_QUEUES else sum(self._ready(name) for name in queues)

    def _retries_waiting(self) -> bool:
        """Rows wait in the retry queue, or in a queue served (come back from it, or beyond the prefetch)."""
        return any(self._ready(name) for name in (message.retry_queue(self.queue), *self._consumers.queues.values()))

    def _watch_uploads(self) -> None:
        """The uploads thread: read the uploads open as they change, and have the I/O thread serve them."""
        failing = False
        while not self._ended.is_set():
            try:
                for uploads in self.ledger.open_uploads_as_they_change(self.queue, every_s=SERVE_EVERY_S):
                    if failing:
                        log.info("ledger back, serving the uploads open", extra={"uploads": len(uploads)})
                    failing = False
                    if self._ended.is_set():
                        return
                    self._connection.add_callback_threadsafe(functools.partial(self._serve, uploads))
            except LedgerUnavailable as exc:
                if not failing:
                    log.warning("ledger unavailable, serving the uploads as last read", extra={"error": str(exc)})
                failing = True
            except pika.exceptions.ConnectionWrongStateError:
                return
            self._ended.wait(SERVE_EVERY_S)

    def _serve(self, uploads: list[OpenUpload]) -> None:
        """On the I/O thread: consume the queues of the uploads served, with their shares; take back the rows held
        of those paused (back to their queue) and cancelled (dropped)."""
        self._rows.know(uploads)
        self._stopped = {u.id for u in uploads if u.paused or u.cancelled}
        self._cancelled = {u.id for u in uploads if u.cancelled}
        if self._stopped:
            held = self._rows.withdraw(self._stopped)
            arrived = [d for d in self._arrived if upload_of(d.properties) in self._stopped]
            if arrived:
                self._arrived = [d for d in self._arrived if upload_of(d.properties) not in self._stopped]
            self._taken_back += held + arrived
        self._served = [u for u in uploads if u.served]
        self._consumers.serve(self._served, narrow=self._narrow)

    def _give_back(self) -> None:
        """Give back the rows taken back of paused uploads, and drop those of cancelled ones; none was started.

        Only once their consumers are cancelled: a row given back to a queue we still consume comes straight
        back, and again, until the broker dead-letters it at its delivery limit.
        """
        deliveries, self._taken_back = self._taken_back, []
        dropped = [d for d in deliveries if upload_of(d.properties) in self._cancelled]
        back = [d for d in deliveries if upload_of(d.properties) not in self._cancelled]
        self._settler.withdraw(back=back, dropped=dropped)
        self._in_flight -= len(deliveries)
        log.info("rows of uploads paused or cancelled taken back unstarted",
                 extra={"queue": self.queue, "given_back": len(back), "dropped": len(dropped),
                        "uploads": sorted({upload_of(d.properties) for d in deliveries})[:5]})

    def _settle_what_finished(self) -> None:
        """Record and settle every finished row, the timed-out one included; the rest go back on close."""
        deadline = time.monotonic() + self.settings.worker_shutdown_seconds
        while (self._rows.unrecorded() or self._settler.awaiting) and time.monotonic() < deadline:
            self._record_when_due()
            self._connection.process_data_events(time_limit=0.2)
            self._in_flight -= self._settler.settle_confirmed()

    def _finish_in_hand(self) -> None:
        """On SIGTERM: give the rows in hand time to finish; the broker requeues the rest on close."""
        self._rows.close()
        deadline = time.monotonic() + self.settings.worker_shutdown_seconds
        while ((not self._rows.idle() or self._rows.unrecorded() or self._settler.awaiting)
               and time.monotonic() < deadline):
            self._connection.process_data_events(time_limit=0.2)
            self._in_flight -= self._settler.settle_confirmed()
            self._record_when_due()
        log.info("stopped on SIGTERM",
                 extra={"queue": self.queue, "handled": self.handled, "returned": self._in_flight})

    def _on_message(
        self, _channel: object, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties, body: bytes
    ) -> None:
        """A message pika read itself (with kubejob.pika_fast active, worker.deliveries reads nearly all of them)."""
        delivery = Delivery(method.delivery_tag, properties, body, bool(method.redelivered))
        self._on_deliveries([kept(delivery, self.settings.max_message_bytes)])

    def _on_deliveries(self, deliveries: list[Delivery]) -> None:
        self._in_flight += len(deliveries)
        if self._narrow and not all(delivery.redelivered for delivery in deliveries):
            self._narrow, self._widen_due = False, True
        uploads = [upload_of(delivery.properties) for delivery in deliveries]
        self._settler.acks.delivered([delivery.tag for delivery in deliveries], uploads)
        if self._stopped and not self._stopped.isdisjoint(uploads):  # delivered before its consumer was cancelled
            self._taken_back += [d for d, u in zip(deliveries, uploads, strict=True) if u in self._stopped]
            deliveries = [d for d, u in zip(deliveries, uploads, strict=True) if u not in self._stopped]
        self._arrived += deliveries

    def _wake(self) -> None:
        """From a handler: wake the I/O loop to record and ack what finished now."""
        # If the connection closed under us, the broker requeues what was not acked.
        with contextlib.suppress(pika.exceptions.ConnectionWrongStateError):
            self._connection.add_callback_threadsafe(lambda: None)

    def _record_when_due(self) -> bool:
        """Hand what has finished to the ledger thread, unless a batch is there, a retry is not due, or it gathers."""
        if self._ledger_error is not None:
            raise self._ledger_error
        if self._record_in(time.monotonic()) > 0:
            return False
        self._finished_since = None
        self._batches.put(self._rows.take_finished())
        return True

    def _record_in(self, now: float) -> float:
        """Seconds until the finished rows are to go to the ledger thread; POLL_S while none can."""
        finished = self._rows.finished()
        if not finished:
            self._finished_since = None
        if self._rows.recording() or not finished or not self._ledger_retry.due(now):
            return POLL_S
        if self._finished_since is None:
            self._finished_since = now
        return gather_for(self.settings.worker_linger_seconds, self.settings.batch_rows,
                          finished=finished, running=not self._rows.idle(), since=self._finished_since, now=now)

    def _write_batches(self) -> None:
        """The ledger thread: record each batch, then have the I/O thread settle it."""
        max_attempts = self.settings.worker_max_attempts
        while (batch := self._batches.get()) is not None:
            error = None
            try:
                self.ledger.record([o for o in (b.recorded(max_attempts) for b in batch) if o is not None],
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
        now = time.monotonic()
        if error is not None:
            self._rows.put_back(batch)
            if self._ledger_retry.failing_since is None:
                log.warning("ledger unavailable, acking nothing", extra={"error": str(error), "held": self._in_flight})
            if self._ledger_retry.failed(now):
                self._ledger_error = error
            return
        if self._ledger_retry.failing_since is not None:
            log.info("ledger back", extra={"down_s": round(now - self._ledger_retry.failing_since, 1)})
            self._ledger_retry.succeeded()
        self._rows.recorded()
        succeeded = self._settler.settle(batch)  # acked now; the failed ones when their copies are confirmed
        self._in_flight -= succeeded
        self.handled += succeeded


def idle_for(now: float, last_activity: float, retries_back_at: float) -> float:
    """How long the worker has had nothing to do; a row it retries counts as work until it is due back."""
    return now - max(last_activity, retries_back_at)


def install_sigterm(consumer: Consumer) -> None:
    signal.signal(signal.SIGTERM, lambda _signum, _frame: consumer.stopping.set())
