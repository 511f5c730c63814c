"""CLI: `python -m localcluster up|down|status [--state DIR] [--port N] [--no-agent]`."""

import argparse
import os
import pathlib
import sys
import time

from localcluster import processes
from localcluster.control_plane import REPO_ROOT, ControlPlane, default_state

AGENT = "node-agent"


def start_agent(cp: ControlPlane) -> int:
    """Start the node agent against `cp` unless it runs already; return its pid."""
    pid = processes.running(AGENT, state=cp.state)
    if pid:
        return pid
    (cp.state / "node-agent.ready").unlink(missing_ok=True)  # a stale one would let wait_node pass early
    # Same interpreter as ours, so pods run with the packages this environment has.
    return processes.spawn(AGENT, [sys.executable, "-m", "localcluster.node_agent",
                                   "--state", str(cp.state)],
                           state=cp.state, cwd=REPO_ROOT, env=agent_env())


def agent_env() -> dict[str, str]:
    """Our environment with the launcher package importable, for the agent process."""
    env = dict(os.environ)
    here = str(pathlib.Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def main() -> int:
    """Parse arguments and run the command; exit status 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m localcluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state", type=pathlib.Path, default=default_state())
    parser.add_argument("--port", type=int, default=None, help="kube-apiserver port (default: a free one)")
    parser.add_argument("--no-agent", action="store_true", help="start the control plane only")
    args = parser.parse_args()
    cp = ControlPlane(args.state)
    if args.command == "up":
        took = cp.up(apiserver_port=args.port)
        if not args.no_agent:
            start_agent(cp)
            wait_node(cp)
        print(f"control plane ready at {cp.server} in {took:.1f}s; KUBECONFIG={cp.kubeconfig}")
    elif args.command == "down":
        stopped = [AGENT] if processes.stop(AGENT, state=cp.state) else []
        print("stopped:", " ".join(stopped + cp.down()) or "nothing")
    else:
        pids = {**cp.status(), AGENT: processes.running(AGENT, state=cp.state)}
        for name, pid in pids.items():
            print(f"{name:26} {'running pid ' + str(pid) if pid else 'stopped'}")
        return 0 if all(pids.values()) else 1
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
