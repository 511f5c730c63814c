"""What the benchmarks share: sample files, a producer process, the broker, timing."""

import contextlib
import csv
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pika
import psutil

from data.generate_data import main as generate_data
from kubejob import message

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".run" / "bench"


def connection() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("localhost"))


def declare(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> None:
    """Declare `queue` exactly as the producer and the worker do."""
    channel.queue_declare(message.dead_letter_queue(queue), durable=True)
    channel.queue_declare(queue, durable=True, arguments=message.queue_arguments(queue))


def delete_queue(queue: str) -> None:
    with connection() as conn:
        channel = conn.channel()
        channel.queue_delete(queue)
        channel.queue_delete(message.dead_letter_queue(queue))


def depth(queue: str) -> int:
    with connection() as conn:
        return conn.channel().queue_declare(queue, passive=True).method.message_count


def reported_messages(queue: str) -> int | None:
    """The queue's `messages` as the management API reports it (None before its first count)."""
    response = httpx.get(f"http://localhost:15672/api/queues/%2F/{queue}", auth=("guest", "guest"))
    return response.json().get("messages") if response.status_code == 200 else None


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def producer(queue: str) -> Iterator[tuple[str, int]]:
    """A real `python -m producer` process publishing to `queue`; yields (base URL, pid)."""
    port = free_port()
    env = os.environ | {"QUEUE_NAME": queue, "PRODUCER_PORT": str(port), "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def upload(url: str, path: Path) -> tuple[float, dict]:
    """POST the file (streamed from disk); return seconds to the 2xx and its JSON."""
    with open(path, "rb") as f:
        started = time.perf_counter()
        response = httpx.post(f"{url}/upload", files={"file": (path.name, f, "text/csv")}, timeout=None)
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


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
