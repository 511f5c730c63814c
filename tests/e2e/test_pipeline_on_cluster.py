"""The whole pipeline on the local Kubernetes: upload a CSV, the scaler's Jobs drain the queue, the upload is done.

Producer and scaler run as pods of infra/k8s's Deployments on the node agent, the
scaler creates worker Jobs through its own ServiceAccount, and each Job runs real
`python -m worker` processes against the local RabbitMQ, recording each row in the
ledger (the local PostgreSQL, with the account of the postgres-credentials Secret).
"""

import csv
import json
import subprocess
import sys

import httpx
import pytest
from kubernetes import client

from scaler.job_template import LABEL_SELECTOR
from scaler.jobs import is_finished
from tests.helpers import REPO_ROOT, answers, free_port, wait_for
from tests.helpers.kube import app_documents

ROWS = 3000
DRAIN_TIMEOUT = 300.0


def deploy(kube_cluster, ns: str, *, queue: str, port: int, record_dir, broker) -> str:
    """Apply infra/k8s (without the RabbitMQ workload) into `ns`, set for this test's queue and port.

    Returns the upload token the producer's pod was given.
    """
    docs = app_documents(QUEUE_NAME=queue, PRODUCER_PORT=str(port), E2E_RECORD_DIR=str(record_dir),
                         WORKER_HANDLER="tests.e2e.recording_handler:record_row")
    kube_cluster.create_credentials(ns, user=broker.user, password=broker.password)
    token = kube_cluster.create_upload_token(ns)
    kube_cluster.apply(ns, docs)
    return token


def test_uploaded_rows_are_all_handled_by_jobs_the_scaler_starts(kube_cluster, node_agent, broker, queue_name,
                                                                 namespace, tmp_path):
    ns, port = namespace, free_port()
    record_dir = tmp_path / "handled"
    record_dir.mkdir()
    data = tmp_path / "rows.csv"
    subprocess.run([sys.executable, str(REPO_ROOT / "data" / "generate_data.py"), "--rows", str(ROWS),
                    "--out", str(data)], check=True, capture_output=True)
    token = deploy(kube_cluster, ns, queue=queue_name, port=port, record_dir=record_dir, broker=broker)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(url + "/healthz"), what="the producer pod to answer", timeout=90)
    for refused in ({}, {"Authorization": "Bearer not-the-token"}):  # the manifests turn the token on
        with data.open("rb") as f:
            response = httpx.post(url + "/upload", files={"file": ("rows.csv", f, "text/csv")},
                                  headers=refused, timeout=120)
        assert response.status_code == 401, response.text
    assert not broker.exists(queue_name) or broker.depth(queue_name) == 0  # nothing published
    with data.open("rb") as f:
        response = httpx.post(url + "/upload", files={"file": ("rows.csv", f, "text/csv")},
                              headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert response.status_code < 300 and response.json()["rows"] == ROWS, response.text
    status_url = url + response.json()["status_url"]

    def done() -> dict | None:
        status = httpx.get(status_url, timeout=10).json()
        return status if status["state"] == "done" else None
    status = wait_for(done, what="the upload's state to be done", timeout=DRAIN_TIMEOUT, interval=2)
    assert (status["done"], status["failed"], status["rows"]) == (ROWS, 0, ROWS)

    batch = client.BatchV1Api(kube_cluster.api_client())

    def drained():
        jobs = batch.list_namespaced_job(ns, label_selector=LABEL_SELECTOR).items
        return jobs and all(is_finished(j) for j in jobs) and broker.depth(queue_name) == 0 and jobs
    jobs = wait_for(drained, what="the queue to drain and every Job to end", timeout=DRAIN_TIMEOUT, interval=2)

    assert all(j.status.succeeded for j in jobs), [j.status for j in jobs]
    with data.open() as f:
        expected = {row["id"] for row in csv.DictReader(f)}
    handled = [line for p in record_dir.glob("*.ids") for line in p.read_text().split()]
    assert set(handled) == expected and len(handled) >= ROWS
    # The workers' own account of it, read through the apiserver from the node agent.
    counts = [_handled_in_log(kube_cluster.kubectl("logs", f"job/{j.metadata.name}", "-n", ns).stdout)
              for j in jobs]
    assert sum(counts) >= ROWS, counts
    # Each Job says why the scaler made it, reported by the scaler's pod (POD_NAME from the downward API).
    created = client.EventsV1Api(kube_cluster.api_client()).list_namespaced_event(
        ns, field_selector="reason=CreatedForBacklog").items
    assert sorted(e.regarding.uid for e in created) == sorted(j.metadata.uid for j in jobs)
    assert {e.reporting_instance.startswith("scaler-") for e in created} == {True}, created


def _handled_in_log(text: str) -> int:
    """The `handled` count the worker logs when it exits on an empty queue."""
    for line in reversed(text.splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if "handled" in event:
            return int(event["handled"])
    pytest.fail(f"no exit line with a handled count in the worker log:\n{text[-2000:]}", pytrace=False)
