"""A process's peak resident memory, as Linux counts it (VmHWM in /proc/<pid>/status)."""

import threading
import time
from pathlib import Path


def high_water(pid: int) -> int | None:
    """The process's peak RSS in bytes so far; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    hwm = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(hwm[0].split()[1]) * 1024 if hwm else None  # none for a zombie: it has exited


class PeakRss:
    """A process's peak RSS, read until it exits."""

    def __init__(self, pid: int) -> None:
        self.pid, self.bytes = pid, 0
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while (peak := high_water(self.pid)) is not None:
            self.bytes = max(self.bytes, peak)
            time.sleep(0.02)

    def join(self) -> int:
        self._thread.join(timeout=10)
        return self.bytes
