"""`python -m bench.profile_drain`: where one worker's drain spends its time, as a py-spy flame graph.

Fills a fresh queue with producer-shaped rows, then drains it with a real `python -m worker`
(no-op handler, the real ledger, the shipped prefetch unless --prefetch) under py-spy, one stack
per thread (I/O, handler, ledger). With --gil only the samples of the thread holding the GIL count: the
Python work the three threads take turns at. Leaves no queue and no ledger rows behind.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench import support
from bench.drain import fill
from tests.helpers import REPO_ROOT
from tests.helpers.ledger import finished
from worker.settings import Settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_drain", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--prefetch", type=int, default=Settings().worker_prefetch)
    parser.add_argument("--gil", action="store_true", help="only samples that hold the GIL")
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--format", choices=["flamegraph", "raw", "speedscope"], default="flamegraph",
                        help="raw: one collapsed stack per line, for grep and scripts")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "kube-job-drain-profile.svg")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=Path(sys.executable).parent) or shutil.which("py-spy")
    if py_spy is None:
        sys.exit("profile_drain: py-spy is missing: pip install -r requirements-dev.txt")
    queue = f"bench-profile-{uuid.uuid4().hex[:8]}"
    upload_id = fill(queue, support.sample_rows(support.sample_csv(args.rows)))
    env = os.environ | {"QUEUE_NAME": queue, "WORKER_HANDLER": "worker.handlers:noop",
                        "WORKER_PREFETCH": str(args.prefetch), "WORKER_IDLE_SECONDS": "0.5",
                        "WORKER_METRICS_PORT": "0", "LOG_LEVEL": "WARNING"}
    command = [py_spy, "record", "--threads", "--nonblocking", "--rate", str(args.rate),
               "--format", args.format, "-o", args.out, *(["--gil"] if args.gil else []),
               "--", sys.executable, "-m", "worker"]
    try:
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
    finally:
        recorded = finished(upload_id)
        support.clean(queue)
    print(f"{recorded} of {args.rows} rows drained; profile in {args.out}")
    return 0 if recorded == args.rows else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
