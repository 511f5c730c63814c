"""Each service's image, built by Docker (infra/local-cluster/images.sh, as `make images`), run the
way the manifests run it: read-only root, uid 10001, no capabilities, no privilege escalation.

This catches what only a built image shows: a module or data file left out of the copy, a package
missing from the service's own requirements.txt (the repository's .venv holds all three services'
packages), code that writes beside itself, a CMD that does not start the service. The containers
share the host's network namespace, to reach the RabbitMQ and the apiserver on loopback.
"""

import os
import subprocess
import uuid

import httpx
import pytest
from kubernetes import client

from scaler.job_template import LABEL_SELECTOR
from tests.helpers import REPO_ROOT, answers, free_port, wait_for
from tests.helpers.broker import Broker

CONFINED = ["--read-only", "--user", "10001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--network", "host", "--tmpfs", "/tmp"]


@pytest.fixture(scope="session")
def images() -> None:
    """producer, worker and scaler:latest, built (or found in Docker's cache) once per run."""
    subprocess.run([str(REPO_ROOT / "infra" / "local-cluster" / "images.sh"), "services"], check=True,
                   capture_output=True)


class Container:
    """`image` run detached with CONFINED and `env`; removed by stop()."""

    def __init__(self, image: str, *, volumes: dict[str, str] | None = None, **env: str) -> None:
        self.name = f"kube-job-test-{uuid.uuid4().hex[:8]}"
        args = [f"--env={k}={v}" for k, v in env.items()]
        args += [f"--volume={host}:{inside}:ro" for host, inside in (volumes or {}).items()]
        subprocess.run(["docker", "run", "--detach", "--name", self.name, *CONFINED, *args, image],
                       check=True, capture_output=True)

    def running(self) -> bool:
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", self.name],
                             capture_output=True, text=True)
        return out.stdout.strip() == "true"

    def logs(self) -> str:
        out = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return out.stdout + out.stderr

    def wait(self, timeout: float) -> int:
        return int(subprocess.run(["docker", "wait", self.name], capture_output=True, text=True,
                                  check=True, timeout=timeout).stdout)

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.name], capture_output=True)


def test_the_producer_image_takes_an_upload(images, broker: Broker, queue_name: str) -> None:
    port = free_port()
    container = Container("producer:latest", PRODUCER_PORT=str(port), QUEUE_NAME=queue_name)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: not container.running() or answers(url + "/healthz"),
                 what="the producer image to answer", timeout=60)
        assert container.running(), container.logs()
        response = httpx.post(url + "/upload", files={"file": ("a.csv", b"id,name\n1,a\n2,b\n", "text/csv")},
                              timeout=30)
        assert (response.status_code, response.json()["rows"]) == (200, 2), response.text
        assert broker.backlog(queue_name) == 2
    finally:
        container.stop()


def test_the_worker_image_drains_the_queue_and_exits_0(images, broker: Broker, queue_name: str) -> None:
    broker.publish_rows(queue_name, [{"id": str(n)} for n in range(50)])
    # The session's ledger, where the upload is recorded: a worker serves the uploads the ledger has open.
    container = Container("worker:latest", QUEUE_NAME=queue_name, WORKER_IDLE_SECONDS="1",
                          DATABASE_URL=os.environ["DATABASE_URL"])
    try:
        assert container.wait(timeout=60) == 0, container.logs()
        assert broker.backlog(queue_name) == 0
        assert '"handled": 50' in container.logs()
    finally:
        container.stop()


def test_the_scaler_image_creates_a_job_for_a_backlog(images, kube_cluster, broker: Broker, queue_name: str,
                                                      tmp_path) -> None:
    ns = kube_cluster.namespace()
    broker.publish_rows(queue_name, [{"id": str(n)} for n in range(30)])  # above the default threshold, 20
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kube_cluster.kubeconfig.read_text())
    kubeconfig.chmod(0o644)  # readable by uid 10001 inside the container
    container = Container("scaler:latest", volumes={str(kubeconfig): "/kube/config"}, KUBECONFIG="/kube/config",
                          POD_NAMESPACE=ns, QUEUE_NAME=queue_name, SCALER_POLL_SECONDS="0.5",
                          DATABASE_URL=os.environ["DATABASE_URL"])
    batch = client.BatchV1Api(kube_cluster.api_client())
    try:
        jobs = wait_for(lambda: not container.running() or
                        batch.list_namespaced_job(ns, label_selector=LABEL_SELECTOR).items,
                        what="the scaler image to create a Job", timeout=60)
        assert container.running(), container.logs()
        assert len(jobs) == 1, [j.metadata.name for j in jobs]
    finally:
        container.stop()
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")
