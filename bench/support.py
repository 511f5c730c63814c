"""What the benchmarks share: sample files, memory sampling, and the tests' broker (tests/helpers)."""

import csv
import statistics
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pika
import psutil

from data.generate_data import main as generate_data
from kubejob import message
from tests.helpers import REPO_ROOT
from tests.helpers.broker import Broker

WORK = REPO_ROOT / ".run" / "bench"
# From one run to the next PerfTest's own rate moves by a fifth on this shared machine: a single
# pair says more about the moment than about the service.
ROUNDS = 3
broker = Broker()


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


def encoded_messages(path: Path, limit: int | None = None,
                     upload_id: str = "bench") -> list[tuple[bytes, pika.BasicProperties]]:
    """The messages the producer would publish for `path`, built the same way."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        return [
            message.encode(row, upload_id=upload_id, row_number=n, line=n + 1)
            for n, row in enumerate(rows, start=1)
            if limit is None or n <= limit
        ]


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
    """Consume `queue` on `broker`, throwing the rows away, until it is empty after `stop` is set."""
    with broker.connection() as conn:
        channel = conn.channel()
        broker.declare(channel, queue)
        for method, _props, _body in channel.consume(queue, auto_ack=True, inactivity_timeout=0.5):
            if method is None and stop.is_set():
                break
