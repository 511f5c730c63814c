"""What the benchmarks share: sample files, memory sampling, and the tests' broker and ledger (tests/helpers)."""

import csv
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pika
import pika.exceptions
import psutil

from data.generate_data import main as generate_data
from kubejob import message
from kubejob.settings import LedgerSettings
from tests.helpers import REPO_ROOT
from tests.helpers.broker import Broker
from tests.helpers.ledger import forget_uploads

# The tests' helpers record uploads in the ledger DATABASE_URL names, as the services find theirs: without it,
# the one every service defaults to (make postgres).
os.environ.setdefault("DATABASE_URL", LedgerSettings().database_url.get_secret_value())
WORK = REPO_ROOT / ".run" / "bench"
# From one run to the next PerfTest's own rate moves by a fifth on this shared machine: a single
# pair says more about the moment than about the service.
ROUNDS = 3
broker = Broker()


# Unconfirmed messages counted in by the broker: none more for this long, and the rest were lost.
FILL_STALL_S = 10


def counted_in(expected: int, count: Callable[[], int]) -> int:
    """Wait until `count()`, what the broker holds, reaches `expected` or stops growing for FILL_STALL_S;
    return what it reached."""
    held, grew_at = 0, time.monotonic()
    while held < expected and time.monotonic() - grew_at < FILL_STALL_S:
        time.sleep(0.05)
        if (now_in := count()) > held:
            held, grew_at = now_in, time.monotonic()
    return held


def cpu_s(processes: list[psutil.Process]) -> float:
    """The user and system CPU seconds the processes have spent."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


class MachineCpu:
    """The machine's busy CPU time (every core, every process) since the mark: what a span cost it."""

    def __init__(self) -> None:
        self._marked = psutil.cpu_times()

    def busy_s(self) -> float:
        now = psutil.cpu_times()
        spent = sum(now) - sum(self._marked)
        return spent - ((now.idle + now.iowait) - (self._marked.idle + self._marked.iowait))

    def busy_share(self, seconds: float) -> float:
        """The share of all the cores busy since the mark, `seconds` ago: near 1, the machine set the pace."""
        return self.busy_s() / seconds / psutil.cpu_count()


class Compared(NamedTuple):
    """Ours and a yardstick, by turns: the median rate of each, the median ratio and each round's."""

    ours: float
    yardstick: float
    ratio: float
    ratios: list[float]


def against_yardstick(ours: Callable[[], float], yardstick: Callable[[], float], rounds: int = ROUNDS) -> Compared:
    """Run ours and the yardstick by turns, `rounds` times each."""
    mine, theirs = [], []
    for _ in range(rounds):
        mine.append(ours())
        theirs.append(yardstick())
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    return Compared(statistics.median(mine), statistics.median(theirs), statistics.median(ratios), ratios)


def sample_csv(rows: int) -> Path:
    """A generated CSV of `rows` data rows, made once and kept under .run/bench."""
    path = WORK / f"rows-{rows}.csv"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        generate_data(["--rows", str(rows), "--out", str(path), "--seed", "1"])
    return path


def sample_csv_of_size(size_bytes: int) -> Path:
    """A generated CSV of about `size_bytes` bytes."""
    probe = sample_csv(10_000)
    rows = size_bytes * 10_000 // probe.stat().st_size
    return sample_csv(rows)


def sample_rows(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    """The rows of `path` (its first `limit`), as the producer reads them."""
    with open(path, newline="", encoding="utf-8") as f:
        return [row for n, row in enumerate(csv.DictReader(f), start=1) if limit is None or n <= limit]


def encoded_messages(path: Path, limit: int | None = None,
                     upload_id: str = "bench") -> list[tuple[bytes, pika.BasicProperties]]:
    """The messages the producer would publish for `path`, built the same way."""
    return [message.encode(row, upload_id=upload_id, row_number=n, line=n + 1)
            for n, row in enumerate(sample_rows(path, limit), start=1)]


def clean(queue: str, on: Broker = broker) -> None:
    """No queue of `queue` left on `on` (the uploads' and those they share), and no upload into it in the ledger."""
    on.delete_queue(queue)
    forget_uploads(queue)


class PeakRss:
    """Samples a process's resident memory every 20 ms while in a `with` block."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()

    def __enter__(self) -> "PeakRss":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)


def discard(broker: Broker, queue: str, stop: threading.Event) -> None:
    """Consume the uploads' queues of `queue` on `broker` as they appear, throwing the rows away, until they are
    all empty after `stop` is set."""
    with broker.connection() as conn:
        channel, consumed = conn.channel(), set()
        broker.declare(channel, queue)
        while not (stop.is_set() and broker.backlog(queue) == 0):
            try:
                for name in set(broker.upload_queues(queue)) - consumed:
                    channel.basic_consume(name, lambda *_: None, auto_ack=True)
                    consumed.add(name)
                conn.process_data_events(time_limit=0.5)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:  # deleted since it was listed: consume the others again
                    raise
                channel, consumed = conn.channel(), set()
