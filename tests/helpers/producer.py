"""`python -m producer` as a child process, for tests and benchmarks that need the real server."""

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.helpers import REPO_ROOT, answers, free_port, wait_for


@contextlib.contextmanager
def producer(queue: str) -> Iterator[tuple[str, int]]:
    """A real producer publishing to `queue`, answering on its health endpoint; yields (base URL, pid)."""
    port = free_port()
    env = os.environ | {"QUEUE_NAME": queue, "PRODUCER_PORT": str(port), "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "producer"], cwd=REPO_ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{url}/healthz"), what="the producer to answer", timeout=30, interval=0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def csv_file(rows: int, poison: frozenset[int] = frozenset()) -> bytes:
    """A CSV of `rows` rows (id, name, poison); the rows numbered in `poison` fail handlers.fail_poison."""
    lines = ["id,name,poison"] + [f"{i},name {i},{'yes' if i in poison else 'no'}" for i in range(1, rows + 1)]
    return ("\n".join(lines) + "\n").encode()


def upload(url: str, path: Path) -> tuple[float, dict]:
    """POST the file (streamed from disk); return seconds to the 2xx and its JSON."""
    with open(path, "rb") as f:
        started = time.perf_counter()
        response = httpx.post(f"{url}/upload", files={"file": (path.name, f, "text/csv")}, timeout=None)
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()
