"""Running the handler on delivered rows, up to WORKER_CONCURRENCY at once; finished rows wait to be taken.

An ordinary function runs on a pool of threads, an `async def` one as tasks on an event loop
of its own; either way off the I/O thread, which keeps the connection going however long a
row takes. A dispatcher starts the rows held in the turns of the fair share (worker.share), one
as a handler comes free, so that a row held is never promised to a handler before its turn and
the rows of a paused or cancelled upload can still be taken back unstarted. A redelivered row the ledger has no
outcome for is started alone, once every row before it is recorded, and each such start is
counted in the ledger: if it kills this worker too, no other row is handled again or blamed,
and the row that keeps killing workers is given up on.

The finished rows are the I/O thread's to record (`take_finished`, then `recorded` or
`put_back`); every count and collection that threads share here is behind the one lock of `Rows`.
"""

import asyncio
import collections
import contextlib
import inspect
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import cast

from kubejob import message
from kubejob.errors import Temporary
from kubejob.ledger import OpenUpload
from kubejob.message import Delivery
from worker import metrics
from worker.handlers import Handler
from worker.ledger import Ledger
from worker.settings import Settings
from worker.settle import GaveUp, MessageTooLarge, Outcome
from worker.share import Turns

# How often a dispatcher waiting for a row looks at `stopping`, which is set from a signal handler.
STOPPING_CHECK_S = 0.2

log = logging.getLogger(__name__)


class RowTimedOut(Temporary):
    """A handler outlived WORKER_ROW_TIMEOUT_SECONDS; its thread cannot be stopped, so the process ends."""


class Rows:
    """Handles delivered rows; `wake` is called (from any thread) when one has finished."""

    def __init__(self, settings: Settings, handler: Handler, ledger: Ledger, *,
                 wake: Callable[[], None], stopping: threading.Event) -> None:
        self._settings, self._handler, self._ledger = settings, handler, ledger
        self._wake, self._stopping = wake, stopping
        self._concurrency, self._batch_rows = settings.worker_concurrency, settings.batch_rows
        self._lock = threading.Lock()  # guards _turns, _closed, _finished, _recording, _active, _running, timed_out
        self._more = threading.Condition(self._lock)  # a row is held, a handler came free, or no more are taken
        self._turns = Turns()  # held, not started
        self._closed = False
        self._finished: collections.deque[Outcome] = collections.deque()  # not yet taken, oldest first
        self._recording = False  # the rows taken last are neither recorded nor put back yet
        self._active = 0  # handed to a handler and not finished
        self._running: dict[int, tuple[Delivery, message.Row, float]] = {}  # by tag: in the handler since
        self.timed_out: RowTimedOut | None = None
        # An `async def` handler's dispatcher runs on its event loop, and is woken there.
        self._loop = asyncio.new_event_loop() if inspect.iscoroutinefunction(handler) else None
        self._more_async = asyncio.Event()

    def start(self) -> None:
        if self._loop is None:
            threading.Thread(target=self._dispatch, name="dispatcher", daemon=True).start()
        else:
            threading.Thread(target=self._loop.run_until_complete, args=(self._dispatch_on_loop(),),
                             name="event-loop", daemon=True).start()

    def submit(self, deliveries: list[Delivery]) -> None:
        """Hold rows to be started in their turns, from the I/O thread."""
        with self._lock:
            for delivery in deliveries:
                self._turns.add(delivery)
            self._more.notify()
        self._wake_loop()

    def know(self, uploads: Iterable[OpenUpload]) -> None:
        """The uploads open now, whose tenants and weights decide the turns."""
        with self._lock:
            self._turns.know(uploads)

    def withdraw(self, uploads: set[str]) -> list[Delivery]:
        """Take back every held row of `uploads` that has not started; return them."""
        with self._lock:
            return self._turns.withdraw(uploads)

    def close(self) -> None:
        """Start no more rows; those not started stay unacked and go back to the queue."""
        with self._lock:
            self._closed = True
            self._more.notify_all()
        self._wake_loop()

    def _wake_loop(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # an event loop that has ended already
                self._loop.call_soon_threadsafe(self._more_async.set)

    def idle(self) -> bool:
        with self._lock:
            return self._active == 0

    def finished(self) -> int:
        """How many finished rows wait to be taken."""
        with self._lock:
            return len(self._finished)

    def recording(self) -> bool:
        """The rows taken last are being recorded: neither `recorded` nor `put_back` yet."""
        with self._lock:
            return self._recording

    def unrecorded(self) -> bool:
        """Some finished rows are not recorded yet: waiting to be taken, or being recorded."""
        with self._lock:
            return self._recording or bool(self._finished)

    def take_finished(self) -> list[Outcome]:
        """Every finished row, oldest first, to be recorded; then `recorded`, or `put_back` if that failed."""
        with self._lock:
            batch = list(self._finished)
            self._finished.clear()
            self._recording = True
        return batch

    def recorded(self) -> None:
        """The rows taken last are in the ledger."""
        with self._lock:
            self._recording = False

    def put_back(self, batch: list[Outcome]) -> None:
        """The rows taken last were not recorded: they are the first the next `take_finished` takes."""
        with self._lock:
            self._finished.extendleft(reversed(batch))
            self._recording = False

    def overdue(self, now: float) -> bool:
        """A row outlived the time limit: its outcome is now a failed attempt, and no more are taken; True if so."""
        limit = self._settings.worker_row_timeout_seconds
        with self._lock:
            late = next((entry for entry in self._running.values() if now - entry[2] >= limit), None)
            if late is None:
                return False
            delivery, row, _ = late
            self.timed_out = RowTimedOut(f"the handler ran longer than WORKER_ROW_TIMEOUT_SECONDS ({limit:g} s)")
            self._finished.append(Outcome(delivery, row, self.timed_out))
            others = len(self._running) - 1
        log.error("row outlived the time limit, exiting",
                  extra={"queue": self._settings.queue_name, "message_id": delivery.properties.message_id,
                         "attempt": row.attempt, "timeout_s": limit, "still_running": others})
        return True

    def _take(self) -> Delivery | None:
        """The next row to start, once a handler is free; None once no more are to start (those held stay
        unacked: the broker requeues them)."""
        with self._more:
            while not (self._closed or self._stopping.is_set()):
                if self._active < self._concurrency and (delivery := self._turns.take()) is not None:
                    self._active += 1
                    return delivery
                self._more.wait(STOPPING_CHECK_S)
        return None

    def _dispatch(self) -> None:
        """Hand rows to the handler threads, started as they are first needed."""
        ready: queue.Queue[Delivery] = queue.Queue()
        threads = 0
        while (delivery := self._take()) is not None:
            if delivery.redelivered:
                self._wait_until_all_recorded()
            if delivery.redelivered or self._concurrency == 1:
                self._handle(delivery)  # on this thread: alone, or one at a time anyway
                continue
            with self._lock:
                busy = self._active
            if busy > threads and threads < self._concurrency:
                threading.Thread(target=self._handle_from, args=(ready,), name=f"handler-{threads}",
                                 daemon=True).start()
                threads += 1
            ready.put(delivery)

    def _handle_from(self, ready: "queue.Queue[Delivery]") -> None:
        while True:
            delivery = ready.get()
            if self._stopping.is_set():
                with self._lock:
                    self._active -= 1
                continue  # not started, so not acked: the broker requeues it
            self._handle(delivery)

    def _handle(self, delivery: Delivery) -> None:
        row = self._begin(delivery)
        if row is not None:
            with self._handling(delivery, row):
                self._handler(row.data)

    async def _dispatch_on_loop(self) -> None:
        slots, tasks = asyncio.Semaphore(self._concurrency), set()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()

        while True:
            await slots.acquire()
            if (delivery := await self._take_async()) is None:
                break
            if delivery.redelivered:
                await asyncio.to_thread(self._wait_until_all_recorded)
                await self._handle_async(delivery)
                slots.release()
                continue
            task = asyncio.create_task(self._handle_async(delivery))
            tasks.add(task)
            task.add_done_callback(finished)
        # Returning would cancel the rows in hand; on SIGTERM they get their time to finish.
        await asyncio.gather(*tasks)

    async def _take_async(self) -> Delivery | None:
        """The next row to start (a slot is free), on the event loop; None once no more are to start."""
        while True:
            self._more_async.clear()
            with self._lock:
                if self._closed or self._stopping.is_set():
                    return None
                delivery = self._turns.take()
                if delivery is not None:
                    self._active += 1
                    return delivery
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._more_async.wait(), STOPPING_CHECK_S)

    async def _handle_async(self, delivery: Delivery) -> None:
        if delivery.redelivered:  # it asks the ledger before it starts: not on the loop
            row = await asyncio.to_thread(self._begin, delivery)
        else:
            row = self._begin(delivery)
        if row is not None:
            with self._handling(delivery, row):
                await cast(Awaitable[None], self._handler(row.data))

    def _begin(self, delivery: Delivery) -> message.Row | None:
        """The row to hand to the handler; None when it is not to be handled, its outcome finished already."""
        row, outcome = self._read(delivery)
        if outcome is not None:
            self._finish(outcome)
            return None
        assert row is not None
        with self._lock:
            self._running[delivery.tag] = (delivery, row, time.monotonic())
        return row

    def _read(self, delivery: Delivery) -> tuple[message.Row | None, Outcome | None]:
        """The row a delivery carries; and, when it is not to be handled, its outcome already."""
        row = None
        if delivery.redelivered:
            metrics.REDELIVERIES.inc()
        try:
            if delivery.dropped:  # its body was too large to keep: its headers say which row it is
                row = message.named_row(delivery.properties)
            else:
                row = message.decode(delivery.body, delivery.properties)
            if delivery.redelivered:
                if self._ledger.has(row.upload_id, row.row):
                    return row, Outcome(delivery, row, None, already_recorded=True)
                self._count_start(row)
            if delivery.dropped:
                raise MessageTooLarge(delivery.dropped, self._settings.max_message_bytes)
        except Exception as exc:
            return row, Outcome(delivery, row, exc)
        return row, None

    @contextlib.contextmanager
    def _handling(self, delivery: Delivery, row: message.Row) -> Iterator[None]:
        """Around the handler's call, sync or async: what it raises is the row's outcome, not this thread's end."""
        error, started = None, time.perf_counter()
        try:
            yield
        except Exception as exc:
            error = exc
        metrics.HANDLER_SECONDS.observe(time.perf_counter() - started)
        self._finish(Outcome(delivery, row, error))

    def _finish(self, outcome: Outcome) -> None:
        with self._lock:
            self._active -= 1
            if self.timed_out is not None:
                return  # the process is ending; the broker requeues this row
            self._running.pop(outcome.delivery.tag, None)
            self._finished.append(outcome)
            self._more.notify()
            # Rows already waiting have woken the I/O thread, which takes them all at once when a batch has
            # finished, or at the end of its wait (worker.linger.gather_for). Waking it for each row that leaves
            # no handler running would cost a wake-up per row at WORKER_CONCURRENCY 1.
            wake = len(self._finished) in (1, self._batch_rows)
        if wake:
            self._wake()

    def _wait_until_all_recorded(self) -> None:
        """Let every row handed out before this one (which counts among the active) finish and be recorded."""
        while not self._stopping.is_set():
            with self._lock:
                if self._active == 1 and not self._finished and not self._recording:
                    return
            time.sleep(0.005)

    def _count_start(self, row: message.Row) -> None:
        """Count this start of a row the broker gave back; raise GaveUp if workers kept dying on it."""
        earlier = self._ledger.start_redelivered(row.upload_id, row.row)
        # Its first delivery was not counted: nothing then told it from the others.
        if earlier >= max(1, self._settings.worker_max_attempts - 1):
            raise GaveUp(f"the worker died while handling it {earlier + 1} times (a crash, a kill, running out "
                         "of memory, or a pod stopped); WORKER_MAX_ATTEMPTS is "
                         f"{self._settings.worker_max_attempts}")
