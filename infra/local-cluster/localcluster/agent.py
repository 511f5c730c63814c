"""Start, wait for and stop the node agent process (python -m localcluster.node_agent)."""

import os
import pathlib
import sys
import time

from localcluster import processes
from localcluster.control_plane import REPO_ROOT, ControlPlane

AGENT = "node-agent"
AGENT_STOP_TIMEOUT = 30.0  # the agent gives its pods at most 10 s of grace on shutdown


def start_agent(cp: ControlPlane) -> int:
    """Start the node agent against `cp` unless it runs already; return its pid."""
    pid = processes.running(AGENT, state=cp.state)
    if pid:
        return pid
    (cp.state / "node-agent.ready").unlink(missing_ok=True)  # a stale one would let wait_node pass early
    # Same interpreter as ours, so pods run with the packages this environment has.
    return processes.spawn(AGENT, [sys.executable, "-m", "localcluster.node_agent",
                                   "--state", str(cp.state)],
                           state=cp.state, cwd=REPO_ROOT, env=agent_env(), tied=cp.tied)


def stop_agent(cp: ControlPlane) -> list[str]:
    """Stop the node agent, then any pod process it could not stop itself; return what ran."""
    stopped = [AGENT] if processes.stop(AGENT, state=cp.state, timeout=AGENT_STOP_TIMEOUT) else []
    return stopped + processes.stop_matching("pod-", state=cp.state)


def agent_env() -> dict[str, str]:
    """Our environment with the launcher package importable, for the agent process."""
    env = dict(os.environ)
    here = str(pathlib.Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def wait_node(cp: ControlPlane, timeout: float = 60.0) -> None:
    """Wait until the agent has registered its Node, so pods applied next get bound."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (cp.state / "node-agent.ready").exists():
            return
        if not processes.running(AGENT, state=cp.state):
            raise SystemExit(f"node agent exited; see {cp.state / 'logs' / AGENT}.log")
        time.sleep(0.3)
    raise SystemExit(f"node agent not ready after {timeout}s; see {cp.state / 'logs' / AGENT}.log")
