"""A RabbitMQ 4.0 of the test session's own: the image infra/k8s runs, started by Docker on loopback ports.

The image is Debian 13's rabbitmq-server made by infra/local-cluster/images.sh, which also starts
the Docker daemon (without its bridge or iptables rules) if none runs. It runs with the shipped
rabbitmq.conf and, once started, imports the shipped definitions.json (the dead-letter queues' policy).
The container shares the host's network, so that the tests reach it on 127.0.0.1; every port it
opens (AMQP, management, Prometheus, epmd and Erlang distribution) is a free one on loopback,
beside the local RabbitMQ.
"""

import contextlib
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pika.exceptions
import psutil

from tests.helpers import REPO_ROOT
from tests.helpers.broker import SHIPPED_DEFINITIONS, Broker

IMAGES_SH = REPO_ROOT / "infra" / "local-cluster" / "images.sh"
# The settings the manifests ship to RabbitMQ, so that this broker behaves as the deployed one.
SHIPPED_CONFIG = REPO_ROOT / "infra" / "rabbitmq" / "rabbitmq.conf"
START_TIMEOUT = 120.0
# The pid of the test session or bench that started a container: one whose process is gone was
# never stopped (the session was killed), and the next start removes it.
OWNER_LABEL = "kube-job-test-owner"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that nothing listens on right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _write_config(path: Path, *, amqp: int, management: int, prometheus: int) -> Path:
    """The shipped settings, with every listener on 127.0.0.1 at the ports given."""
    path.write_text(SHIPPED_CONFIG.read_text() + "\n".join([
        f"listeners.tcp.1 = 127.0.0.1:{amqp}",
        "management.tcp.ip = 127.0.0.1", f"management.tcp.port = {management}",
        "prometheus.tcp.ip = 127.0.0.1", f"prometheus.tcp.port = {prometheus}", ""]))
    path.chmod(0o644)  # the image runs RabbitMQ as uid 999
    return path


class DockerRabbitmq(Broker):
    """A running container of the rabbitmq image; `rabbitmqctl` runs its CLI inside it."""

    def __init__(self, name: str, *, amqp: int, management: int) -> None:
        super().__init__(host="127.0.0.1", port=amqp, management_url=f"http://127.0.0.1:{management}")
        self.name = name
        self.started_in = 0.0  # seconds from asking for the image to a broker that answers

    @classmethod
    def start(cls, state: Path, *, data_in_memory: bool = False) -> "DockerRabbitmq":
        """Build the image if needed, run it, and return once AMQP and the management API answer.

        `data_in_memory` keeps the node's data on a tmpfs, so that a benchmark measures its client
        rather than this shared machine's disk (quorum queues sync every write).
        """
        began = time.monotonic()
        image = subprocess.run(["bash", str(IMAGES_SH), "rabbitmq"], check=True, capture_output=True,
                               text=True, timeout=1800).stdout.strip()
        amqp, management, prometheus, epmd, distribution = free_ports(5)
        config = _write_config(state / "rabbitmq.conf", amqp=amqp, management=management, prometheus=prometheus)
        name = f"kube-job-test-rabbitmq-{uuid.uuid4().hex[:8]}"
        environment = {
            # A node name and an epmd of its own, so it never meets the local RabbitMQ's node.
            "RABBITMQ_NODENAME": f"{name}@localhost", "ERL_EPMD_PORT": str(epmd), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(distribution),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        data = ["--tmpfs", "/var/lib/rabbitmq:uid=999,gid=999,mode=0700"] if data_in_memory else []
        remove_orphans()
        subprocess.run(["docker", "run", "--detach", "--rm", "--name", name, "--network", "host", *data,
                        "--label", f"{OWNER_LABEL}={os.getpid()}",
                        "--volume", f"{config}:/etc/rabbitmq/rabbitmq.conf:ro",
                        *(f"--env={key}={value}" for key, value in environment.items()), image],
                       check=True, capture_output=True, timeout=60)
        server = cls(name, amqp=amqp, management=management)
        try:
            server._wait_until_ready()
            server.import_definitions(SHIPPED_DEFINITIONS)
        except (TimeoutError, httpx.HTTPError):
            server.stop()
            raise
        server.started_in = time.monotonic() - began
        return server

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.check()
                return
            except (httpx.HTTPError, pika.exceptions.AMQPError, OSError) as exc:
                if time.monotonic() > deadline or not self.running():
                    raise TimeoutError(f"RabbitMQ 4.0 in container {self.name} did not start ({exc!r}); "
                                       f"its log ends: {self.log_tail()}") from exc
                time.sleep(0.5)

    def running(self) -> bool:
        inspect = subprocess.run(["docker", "inspect", "--format", "{{.State.Running}}", self.name],
                                 capture_output=True, text=True, timeout=30)
        return inspect.stdout.strip() == "true"

    def log_tail(self, lines: int = 20) -> str:
        logs = subprocess.run(["docker", "logs", "--tail", str(lines), self.name], capture_output=True, text=True,
                              timeout=30)
        return logs.stdout + logs.stderr

    def rabbitmqctl(self, *args: str) -> str:
        """Run `rabbitmqctl -q ARGS` against this node; return its output, raise if it fails."""
        return subprocess.run(["docker", "exec", self.name, "rabbitmqctl", "-q", *args], check=True,
                              capture_output=True, text=True, timeout=120).stdout

    def beam(self) -> psutil.Process:
        """The node's beam.smp as this host sees it (the management API's os_pid is the container's own)."""
        inspect = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", self.name], check=True,
                                 capture_output=True, text=True, timeout=30)
        root = psutil.Process(int(inspect.stdout))
        return next(p for p in [root, *root.children(recursive=True)] if p.name() == "beam.smp")

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.name], capture_output=True, timeout=60)


def remove_orphans() -> list[str]:
    """Remove the containers whose owning process is gone; return their names."""
    listed = subprocess.run(["docker", "ps", "--all", "--filter", f"label={OWNER_LABEL}", "--format",
                             f'{{{{.Names}}}} {{{{.Label "{OWNER_LABEL}"}}}}'],
                            check=True, capture_output=True, text=True, timeout=30).stdout
    orphans = [name for name, owner in (line.split() for line in listed.splitlines())
               if not psutil.pid_exists(int(owner))]
    if orphans:
        subprocess.run(["docker", "rm", "--force", *orphans], capture_output=True, timeout=60)
    return orphans
