"""Row handlers the tests plug into real worker processes with WORKER_HANDLER (see worker.py).

Each appends the row's `id` to the file named by RECORD_FILE, one line per handled row, so a
test can count across processes how often each row was handled.
"""

import os
import time


def _record(row: dict[str, str]) -> None:
    with open(os.environ["RECORD_FILE"], "a") as out:
        out.write(row["id"] + "\n")


def record(row: dict[str, str]) -> None:
    _record(row)


def slow(row: dict[str, str]) -> None:
    """Takes SLOW_SECONDS per row, then records it."""
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0.05")))
    _record(row)


def fail_poison(row: dict[str, str]) -> None:
    """Rows whose `poison` field is "yes" always fail; every attempt is recorded with a `!`."""
    if row.get("poison") == "yes":
        with open(os.environ["RECORD_FILE"], "a") as out:
            out.write(f"!{row['id']}\n")
        raise RuntimeError(f"poison row {row['id']}")
    _record(row)
