"""The whole pipeline on the one-node cluster: upload a CSV, the scaler's Jobs drain the queue.

infra/k8s is applied as shipped, RabbitMQ included, into a namespace of its own. The producer
is reached through `kubectl port-forward`, as the README says; the scaler creates worker Jobs
through its own ServiceAccount, and the kubelet runs every pod from the images built by Docker.
"""

import json
import subprocess
import sys

import httpx
import pytest
from kubernetes import client

from tests.e2e.cluster_config import deploy, finished, queue_depths
from tests.fixtures_kube import REPO_ROOT, wait_for

ROWS = 3000
DRAIN_TIMEOUT = 300.0


def test_uploaded_rows_are_all_handled_by_jobs_the_scaler_starts(kube_node, tmp_path):
    ns = kube_node.namespace()
    data = tmp_path / "rows.csv"
    subprocess.run([sys.executable, str(REPO_ROOT / "data" / "generate_data.py"), "--rows", str(ROWS),
                    "--out", str(data)], check=True, capture_output=True)
    try:
        token = deploy(kube_node, ns)
        with kube_node.port_forward("service/producer", 8000, namespace=ns) as port:
            url = f"http://127.0.0.1:{port}"
            for refused in ({}, {"Authorization": "Bearer not-the-token"}):  # the manifests turn the token on
                with data.open("rb") as f:
                    response = httpx.post(url + "/upload", files={"file": ("rows.csv", f, "text/csv")},
                                          headers=refused, timeout=120)
                assert response.status_code == 401, response.text
            assert queue_depths(kube_node, ns).get("rows", 0) == 0  # nothing published
            with data.open("rb") as f:
                response = httpx.post(url + "/upload", files={"file": ("rows.csv", f, "text/csv")},
                                      headers={"Authorization": f"Bearer {token}"}, timeout=120)
        assert response.status_code < 300 and response.json()["rows"] == ROWS, response.text

        batch = client.BatchV1Api(kube_node.api_client())

        def drained():
            jobs = batch.list_namespaced_job(ns, label_selector="app=worker-job").items
            return jobs and all(finished(j) for j in jobs) and queue_depths(kube_node, ns)["rows"] == 0 and jobs
        jobs = wait_for(drained, what="the queue to drain and every Job to end", timeout=DRAIN_TIMEOUT, interval=2)

        assert {j.metadata.name: finished(j) for j in jobs} == {j.metadata.name: "Complete" for j in jobs}
        assert queue_depths(kube_node, ns) == {"rows": 0, "rows.dead": 0}
        # The workers' own account of it, read through the apiserver from the kubelet.
        counts = [_handled_in_log(kube_node.kubectl("logs", f"job/{j.metadata.name}", "-n", ns).stdout)
                  for j in jobs]
        assert sum(counts) >= ROWS, counts
        print(f"{ROWS} rows handled by {len(jobs)} Jobs (per Job: {counts})")
    finally:
        kube_node.kubectl("delete", "namespace", ns, "--wait=false")


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
