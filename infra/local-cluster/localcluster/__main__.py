"""CLI: `python -m localcluster up|down|status [--state DIR] [--port N]`: the control plane alone
on 127.0.0.1, with no node (what the tests' kube_cluster fixture starts). `make up` is stack.py."""

import argparse
import pathlib
import sys

from localcluster.control_plane import ControlPlane, default_state


def main() -> int:
    """Parse arguments and run the command; exit status 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m localcluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state", type=pathlib.Path, default=default_state())
    parser.add_argument("--port", type=int, default=None, help="kube-apiserver port (default: a free one)")
    args = parser.parse_args()
    cp = ControlPlane(args.state)
    if args.command == "up":
        took = cp.up(apiserver_port=args.port)
        print(f"control plane ready at {cp.server} in {took:.1f}s; KUBECONFIG={cp.kubeconfig}")
    elif args.command == "down":
        print("stopped:", " ".join(cp.down()) or "nothing")
    else:
        pids = cp.status()
        for name, pid in pids.items():
            print(f"{name:26} {'running pid ' + str(pid) if pid else 'stopped'}")
        return 0 if all(pids.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
