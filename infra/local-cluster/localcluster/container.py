"""One container of a pod: its local process, its restarts and its entry in the pod's status."""

import datetime
import pathlib
import signal
import subprocess

from kubernetes import client

from localcluster import processes
from localcluster.probes import Prober
from localcluster.processes import signal_group


def now() -> str:
    """The current time as the RFC 3339 string the API expects."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Container:
    """One container: its command, environment, current process and history."""

    def __init__(self, spec: client.V1Container, logs: pathlib.Path, *, state: pathlib.Path, uid: str) -> None:
        self.spec, self.logs, self.name = spec, logs, spec.name
        # Recorded like the control plane's processes, so `down` finds any the agent left behind.
        self.state_dir, self.record = state, f"pod-{uid}-{spec.name}"
        self.argv: list[str] = []
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        self.restarts, self.started_at, self.not_before = 0, "", 0.0
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.readiness = Prober(spec.readiness_probe, initially=False)
        self.liveness = Prober(spec.liveness_probe, initially=True)

    def log_path(self, restart: int | None = None) -> pathlib.Path:
        """The log file of the current run, or of run number `restart`."""
        return self.logs / f"{self.restarts if restart is None else restart}.log"

    def start(self, cwd: pathlib.Path) -> None:
        """Start the process in its own session so its whole group can be signalled."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(), "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=cwd, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        processes.record(self.record, self.proc.pid, state=self.state_dir, argv=self.argv)
        self.started_at = now()
        self.state = {"running": {"startedAt": self.started_at}}
        self.readiness.started()
        self.liveness.started()

    def reap(self) -> int | None:
        """Return the exit code once the process has ended (128+signal if killed), else None."""
        code = self.proc.poll() if self.proc else None
        if code is None:
            return None
        code = 128 - code if code < 0 else code
        self.state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                     "startedAt": self.started_at, "finishedAt": now(),
                                     "containerID": f"local://{self.proc.pid}"}}
        processes.forget(self.record, state=self.state_dir)
        self.proc = None
        return code

    def status(self) -> dict:
        """The containerStatuses entry for this container."""
        running = "running" in self.state
        return {"name": self.spec.name, "image": self.spec.image, "imageID": "local://" + self.spec.image,
                "containerID": f"local://{self.proc.pid}" if self.proc else "",
                "ready": running and self.readiness.ready,
                "started": running, "restartCount": self.restarts, "state": self.state,
                "lastState": self.last_state}


    def probe(self) -> bool:
        """Run the probes that are due; True when the container's readiness changed.

        A failed liveness probe kills the process group; the pod's restart policy decides the rest.
        """
        if "running" not in self.state:
            return False
        if self.liveness.check(self.spec, self.env) and not self.liveness.ready and self.proc:
            signal_group(self.proc.pid, signal.SIGKILL)
        return self.readiness.check(self.spec, self.env)
