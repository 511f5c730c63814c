"""Start and stop background processes that outlive the command that started them."""

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

STOP_TIMEOUT = 15.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_time(pid: int) -> str | None:
    """Return the kernel's start time of `pid`, or None when it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 counted after the ")" that ends the command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def die_with_parent(argv: list[str]) -> list[str]:
    """`argv`, to be started so that it gets SIGTERM when the thread that starts it ends (die_with_parent.py)."""
    launcher = pathlib.Path(__file__).with_name("die_with_parent.py")
    return [sys.executable, "-I", str(launcher), str(os.getpid()), *argv]


def spawn(name: str, argv: list[str], *, state: pathlib.Path, env: dict | None = None,
          cwd: pathlib.Path | None = None, tied: bool = False) -> int:
    """Start `argv` in its own session with output to `state/logs/<name>.log`; return its pid.

    `tied` processes end with the thread that started them, so a test run that is killed
    outright leaves no control plane behind; `make up`'s processes outlive it on purpose.
    """
    (state / "logs").mkdir(parents=True, exist_ok=True)
    with open(state / "logs" / f"{name}.log", "ab") as log:
        # A new session makes the process a group leader, so stop() reaches its children too.
        proc = subprocess.Popen(die_with_parent(argv) if tied else argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=cwd)
    record(name, proc.pid, state=state, argv=argv)
    return proc.pid


def record(name: str, pid: int, *, state: pathlib.Path, argv: list[str]) -> None:
    """Remember `pid` under `name`, so that another process can find and stop it later."""
    (state / "pids").mkdir(parents=True, exist_ok=True)
    # The start time tells a later `down` whether the pid still is our process, not a reused one.
    entry = {"pid": pid, "start": _start_time(pid), "argv": argv}
    (state / "pids" / f"{name}.json").write_text(json.dumps(entry))


def forget(name: str, *, state: pathlib.Path) -> None:
    """Drop the record of a process that has ended."""
    (state / "pids" / f"{name}.json").unlink(missing_ok=True)


def stop_matching(prefix: str, *, state: pathlib.Path) -> list[str]:
    """Stop every recorded process whose name starts with `prefix`; return those that ran."""
    names = [p.stem for p in (state / "pids").glob(f"{prefix}*.json")]
    return [n for n in names if stop(n, state=state, timeout=5)]


def running(name: str, *, state: pathlib.Path) -> int | None:
    """Return the pid of `name` if the process recorded for it still runs."""
    try:
        record = json.loads((state / "pids" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    if record["start"] is None or _start_time(record["pid"]) != record["start"]:
        return None
    stat = pathlib.Path(f"/proc/{record['pid']}/stat").read_text()
    # A zombie has exited; only its parent has not collected it yet.
    return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else record["pid"]


def stop(name: str, *, state: pathlib.Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the process group of `name`: SIGTERM, then SIGKILL after `timeout`; True if it ran."""
    pid = running(name, state=state)
    (state / "pids" / f"{name}.json").unlink(missing_ok=True)
    if pid is None:
        return False
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    signal_group(pid, signal.SIGKILL)
    return True


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group led by `pid`, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie, reaping it if it is our child."""
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass  # not our child: another process started it, so only /proc can tell
    stat = _start_time(pid)
    if stat is None:
        return False
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
