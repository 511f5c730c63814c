"""Row handlers the tests plug into real worker processes with WORKER_HANDLER (see worker.py).

Each appends the row's `id` to the file named by RECORD_FILE, one line per handled row, so a
test can count across processes how often each row was handled.
"""

import asyncio
import os
import signal
import threading
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


def announced_slow(row: dict[str, str]) -> None:
    """slow, noting in STARTED_FILE each row as it starts: a test sees which row is in hand."""
    with open(os.environ["STARTED_FILE"], "a") as out:
        out.write(row["id"] + "\n")
    slow(row)


_in_handler = 0
_in_handler_lock = threading.Lock()


def _entered(change: int) -> int:
    global _in_handler
    with _in_handler_lock:
        _in_handler += change
        return _in_handler


def overlapping(row: dict[str, str]) -> None:
    """Takes SLOW_SECONDS; notes in PEAK_FILE how many rows were in a handler of this process as it started."""
    at_once = _entered(1)
    try:
        time.sleep(float(os.environ["SLOW_SECONDS"]))
    finally:
        _entered(-1)
    with open(os.environ["PEAK_FILE"], "a") as out:
        out.write(f"{at_once}\n")
    _record(row)


async def overlapping_async(row: dict[str, str]) -> None:
    """overlapping, written as a coroutine."""
    at_once = _entered(1)
    try:
        await asyncio.sleep(float(os.environ["SLOW_SECONDS"]))
    finally:
        _entered(-1)
    with open(os.environ["PEAK_FILE"], "a") as out:
        out.write(f"{at_once}\n")
    _record(row)


def fail_poison(row: dict[str, str]) -> None:
    """Rows whose `poison` field is "yes" always fail; every attempt is recorded with a `!`."""
    if row.get("poison") == "yes":
        with open(os.environ["RECORD_FILE"], "a") as out:
            out.write(f"!{row['id']}\n")
        raise RuntimeError(f"poison row {row['id']}")
    _record(row)


def _poisoned(row: dict[str, str]) -> bool:
    """Whether the row is poison; if so its attempt is recorded first, with a `!`."""
    if row.get("poison") != "yes":
        return False
    with open(os.environ["RECORD_FILE"], "a") as out:
        out.write(f"!{row['id']}\n")
    return True


def exit_on_poison(row: dict[str, str]) -> None:
    """A poison row ends the process as a crash in C code would, with no Python cleanup."""
    if _poisoned(row):
        os._exit(1)
    _record(row)


def kill_on_poison(row: dict[str, str]) -> None:
    """A poison row gets the process SIGKILLed, as the OOM killer does."""
    if _poisoned(row):
        os.kill(os.getpid(), signal.SIGKILL)
    _record(row)


def hang_on_poison(row: dict[str, str]) -> None:
    """A poison row never returns."""
    if _poisoned(row):
        time.sleep(3600)
    _record(row)


def fail_poison_twice(row: dict[str, str]) -> None:
    """A poison row fails its first two attempts; every call is noted with its time in TIMES_FILE."""
    with open(os.environ["TIMES_FILE"], "a") as out:
        out.write(f"{row['id']} {time.time()}\n")
    if row.get("poison") == "yes":
        with open(os.environ["RECORD_FILE"]) as seen:
            attempts = seen.read().split().count(f"!{row['id']}")
        if attempts < 2:
            _poisoned(row)
            raise RuntimeError(f"poison row {row['id']}, attempt {attempts + 1}")
    _record(row)


def timed(row: dict[str, str]) -> None:
    """Notes in STARTED_FILE the time (time.time()) and id of each row as it starts, takes SLOW_SECONDS, records it."""
    with open(os.environ["STARTED_FILE"], "a") as out:
        out.write(f"{time.time():.6f} {row['id']}\n")
    slow(row)
