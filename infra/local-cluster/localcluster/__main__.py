"""CLI: `python -m localcluster up|down|status [--state DIR] [--port N] [--no-agent]`."""

import argparse
import pathlib
import sys

from localcluster import processes
from localcluster.agent import AGENT, start_agent, wait_node
from localcluster.control_plane import ControlPlane, default_state


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
        cp.up(apiserver_port=args.port)
        if not args.no_agent:
            start_agent(cp)
            wait_node(cp)
    elif args.command == "down":
        pass
    else:
        pids = {**cp.status(), AGENT: processes.running(AGENT, state=cp.state)}
        for _name, _pid in pids.items():
            pass
        return 0 if all(pids.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
