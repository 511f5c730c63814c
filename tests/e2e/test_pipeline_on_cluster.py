"""The whole pipeline on the one-node cluster: upload a CSV, the scaler's Jobs drain the queue, the upload is done.

infra/k8s is applied as shipped, RabbitMQ and PostgreSQL included, into a namespace of its own.
The producer is reached through `kubectl port-forward`, as the README says; the scaler creates
worker Jobs through its own ServiceAccount, each worker records its rows in the ledger, and the
kubelet runs every pod from the images built by Docker.
"""

import json
import subprocess
import sys

import httpx
import pytest
from kubernetes import client

from kubejob.message import dead_letter_queue, limit_queue
from scaler.jobs import is_finished
from tests.helpers import REPO_ROOT, wait_for
from tests.helpers.broker import dead_letter_policy
from tests.helpers.kube import deploy, queue_depths, queue_policies, worker_jobs
from tests.helpers.producer import curl_upload

ROWS = 3000
DRAIN_TIMEOUT = 300.0


def test_uploaded_rows_are_all_handled_by_jobs_the_scaler_starts(kube_node, node_namespace, tmp_path):
    ns = node_namespace
    data = tmp_path / "rows.csv"
    subprocess.run([sys.executable, str(REPO_ROOT / "data" / "generate_data.py"), "--rows", str(ROWS),
                    "--out", str(data)], check=True, capture_output=True)
    token = deploy(kube_node, ns)
    # Started together with PostgreSQL, the producer waited for it instead of exiting and being restarted.
    producers = client.CoreV1Api(kube_node.api_client()).list_namespaced_pod(ns, label_selector="app=producer")
    assert [c.restart_count for p in producers.items for c in p.status.container_statuses] == [0], producers
    with kube_node.port_forward("service/producer", 8000, namespace=ns) as port:
        url = f"http://127.0.0.1:{port}"
        # The manifests turn the token on. Refused uploads of a megabyte and more, which the producer
        # answers without resetting the connection: kubectl port-forward ends for good on a reset.
        large, larger = tmp_path / "large.csv", tmp_path / "larger.csv"
        large.write_bytes(b"id\n" + b"1" * 1_000_000 + b"\n")
        larger.write_bytes(b"id\n" + b"1" * 3_000_000 + b"\n")  # curl sends this one with Expect: 100-continue
        response = httpx.post(url + "/upload", files={"file": ("rows.csv", large.read_bytes(), "text/csv")},
                              timeout=120)
        assert response.status_code == 401, response.text
        assert [curl_upload(url, path, token="not-the-token") for path in (large, larger)] == ["401", "401"]
        assert not any(name.startswith("rows.upload.") for name in queue_depths(kube_node, ns))  # nothing published
        auth = {"Authorization": f"Bearer {token}"}
        with data.open("rb") as f:
            response = httpx.post(url + "/upload", files={"file": ("rows.csv", f, "text/csv")}, headers=auth,
                                  timeout=120)
        assert response.status_code < 300 and response.json()["rows"] == ROWS, response.text
        status_url, own = url + response.json()["status_url"], response.json()["queue"]

        def done() -> dict | None:
            status = httpx.get(status_url, headers=auth, timeout=10).json()
            return status if status["state"] == "done" else None
        status = wait_for(done, what="the upload's state to be done", timeout=DRAIN_TIMEOUT, interval=2)
    assert (status["done"], status["failed"], status["rows"]) == (ROWS, 0, ROWS)

    def drained():
        jobs = worker_jobs(kube_node, ns)
        # The upload's queue is deleted a grace after it is done: until then it is empty. A Job reads finished
        # (SuccessCriteriaMet) a moment before its pod is counted in `succeeded`, which is waited for too.
        counted = all(j["status"].get("succeeded") or j["status"].get("failed") for j in jobs)
        return (jobs and all(is_finished(j) for j in jobs) and counted
                and queue_depths(kube_node, ns).get(own, 0) == 0 and jobs)
    jobs = wait_for(drained, what="the queue to drain and every Job to end", timeout=DRAIN_TIMEOUT, interval=2)

    assert all(j["status"].get("succeeded") for j in jobs), [j["status"] for j in jobs]
    depths = queue_depths(kube_node, ns)
    assert (depths.get(own, 0), depths[dead_letter_queue("rows")]) == (0, 0), depths
    # The StatefulSet's postStart hook imported the policy that bounds the dead-letter queues, and only them.
    policies = queue_policies(kube_node, ns)
    assert [policies.get(q, "") for q in (own, dead_letter_queue("rows"), limit_queue("rows"))] == [
        "", dead_letter_policy()["name"], dead_letter_policy()["name"]], policies
    # The workers' own account of it, read through the apiserver from the kubelet.
    counts = [_handled_in_log(kube_node.kubectl("logs", f"job/{j['metadata']['name']}", "-n", ns).stdout) for j in jobs]
    assert sum(counts) >= ROWS, counts
    # Each Job says why the scaler made it, reported by the scaler's pod (POD_NAME from the downward API).
    created = client.EventsV1Api(kube_node.api_client()).list_namespaced_event(
        ns, field_selector="reason=CreatedForBacklog").items
    assert sorted(e.regarding.uid for e in created) == sorted(j["metadata"]["uid"] for j in jobs)
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
