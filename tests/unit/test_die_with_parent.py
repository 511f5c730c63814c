"""A process started through die_with_parent ends when the process that started it is killed outright."""

import pathlib
import signal
import subprocess
import sys
import time

from tests.helpers import REPO_ROOT, die_with_parent

# A parent that starts `sleep` through die_with_parent, says its pid, and waits to be killed.
PARENT = """
import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from localcluster.processes import die_with_parent
child = subprocess.Popen(die_with_parent(["sleep", "60"]))
print(child.pid, flush=True)
time.sleep(60)
"""


def gone(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # ended; its new parent has not reaped it yet


def test_the_command_runs_in_the_process_started_with_its_own_arguments() -> None:
    # The same pid: what a test signals, and what stop() finds, is the command itself.
    script = "import os, sys; print(os.getpid(), sys.argv[1:])"
    process = subprocess.Popen(die_with_parent([sys.executable, "-c", script, "a", "b c"]), stdout=subprocess.PIPE,
                               text=True)
    out, _ = process.communicate(timeout=30)
    assert out == f"{process.pid} ['a', 'b c']\n"


def test_killing_the_parent_outright_sends_the_child_sigterm() -> None:
    package = str(REPO_ROOT / "infra" / "local-cluster")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, package], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert not gone(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child)
