"""Real `python -m worker` processes running a handler of tests/helpers/handlers.py, and what they recorded."""

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT, die_with_parent

# Bounds on what a worker holds in memory, checked against a real one in tests/integration/test_large_messages.py;
# the worker Job's memory limit is sized with them (tests/unit/test_manifests.py).
RESIDENT_BYTES = 80 * 1024**2  # before its first row
PREFETCHED_BODIES = 1.25  # a message waiting in its prefetch, in multiples of its body
IN_HAND_BODIES = 4.5  # a row being read and handled: the receives joined, its body, the row, and glibc's heap


def start_worker(queue: str, record: Path, handler: str = "record", **env: str) -> subprocess.Popen:
    """A worker on `queue` running tests.helpers.handlers.`handler`, which notes each row in `record`."""
    environment = os.environ | {
        "QUEUE_NAME": queue,
        "WORKER_HANDLER": f"tests.helpers.handlers:{handler}",
        "RECORD_FILE": str(record),
        "WORKER_IDLE_SECONDS": "1",
        # Workers of a test run side by side on this host: only a test that reads metrics gives a port.
        "WORKER_METRICS_PORT": "0",
    }
    return subprocess.Popen(die_with_parent([sys.executable, "-m", "worker"]), cwd=REPO_ROOT, env=environment | env)


def handled(record: Path) -> collections.Counter[str]:
    """How often each row id was handled so far, by every worker that wrote to `record`."""
    return collections.Counter(record.read_text().split()) if record.exists() else collections.Counter()


def stop(worker: subprocess.Popen) -> None:
    """SIGTERM the worker, and check it stopped as it should, with exit 0."""
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
