"""Each service as the Dockerfile lays it out (tests/dockerfile.py), run against the real services.

`docker build` cannot run here. This catches what a build would expose at run time: a module
or data file left out of the copy, a package missing from the service's own requirements.txt
(the repository's .venv holds all three services' packages), code that writes beside itself on
a read-only filesystem, a CMD that does not start the service.
"""

import httpx
from kubernetes import client

from scaler.job_template import LABEL_SELECTOR
from tests.dockerfile import Image, build
from tests.helpers import REPO_ROOT, answers, free_port, wait_for
from tests.helpers.broker import Broker


def image(service: str, tmp_path) -> Image:
    return build(REPO_ROOT, tmp_path / "image", SERVICE=service)


def stop(process) -> int:
    process.terminate()
    return process.wait(timeout=30)


def test_the_producer_image_takes_an_upload(broker: Broker, queue_name: str, tmp_path) -> None:
    port = free_port()
    process = image("producer", tmp_path).start(tmp_path / "producer.log", PRODUCER_PORT=str(port),
                                                 QUEUE_NAME=queue_name)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or answers(url + "/healthz"),
                 what="the producer image to answer", timeout=60)
        assert process.poll() is None, (tmp_path / "producer.log").read_text()
        response = httpx.post(url + "/upload", files={"file": ("a.csv", b"id,name\n1,a\n2,b\n", "text/csv")},
                              timeout=30)
        assert (response.status_code, response.json()["rows"]) == (200, 2), response.text
        assert broker.depth(queue_name) == 2
    finally:
        stop(process)


def test_the_worker_image_drains_the_queue_and_exits_0(broker: Broker, queue_name: str, tmp_path) -> None:
    broker.publish_rows(queue_name, [{"id": str(n)} for n in range(50)])
    log = tmp_path / "worker.log"
    process = image("worker", tmp_path).start(log, QUEUE_NAME=queue_name, WORKER_IDLE_SECONDS="1")
    assert process.wait(timeout=60) == 0, log.read_text()
    assert broker.depth(queue_name) == 0
    assert '"handled": 50' in log.read_text()


def test_the_scaler_image_creates_a_job_for_a_backlog(kube_cluster, broker: Broker, queue_name: str,
                                                      tmp_path) -> None:
    ns = kube_cluster.namespace()
    broker.publish_rows(queue_name, [{"id": str(n)} for n in range(30)])  # above the default threshold, 20
    log = tmp_path / "scaler.log"
    process = image("scaler", tmp_path).start(log, KUBECONFIG=str(kube_cluster.kubeconfig), POD_NAMESPACE=ns,
                                              QUEUE_NAME=queue_name, SCALER_POLL_SECONDS="0.5")
    batch = client.BatchV1Api(kube_cluster.api_client())
    try:
        jobs = wait_for(lambda: process.poll() is not None or
                        batch.list_namespaced_job(ns, label_selector=LABEL_SELECTOR).items,
                        what="the scaler image to create a Job", timeout=60)
        assert process.poll() is None, log.read_text()
        assert len(jobs) == 1, [j.metadata.name for j in jobs]
    finally:
        stop(process)
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false")

