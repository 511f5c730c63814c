"""On the one-node cluster, the scaler as deployed reads the ledger: a backlog all paused gets no Job until resumed.

infra/k8s runs as shipped in a namespace of its own, but for a short poll period: the scaler's
pod finds the ledger by DATABASE_URL and the account of the Secret postgres-credentials.
"""

import json
import time

from tests.helpers import wait_for
from tests.helpers.cluster_uploads import publish_upload, resume
from tests.helpers.kube import KubeCluster, deploy, worker_jobs

ROWS = 1200  # 500 a Job: 3 Jobs once it is served
WINDOW_S = 10.0


def scaler_lines(kube_node: KubeCluster, ns: str) -> list[dict]:
    out = kube_node.kubectl("logs", "deployment/scaler", "-n", ns, "--tail=-1").stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_backlog_all_paused_gets_no_job_until_it_is_resumed(kube_node, node_namespace):
    ns = node_namespace
    # LOG_LEVEL DEBUG: the scaler logs every poll then, with the uploads it left out.
    deploy(kube_node, ns, SCALER_POLL_SECONDS="0.5", LOG_LEVEL="DEBUG")
    upload_id = publish_upload(kube_node, ns, "rows", ROWS, paused=True)

    def left_out() -> list[dict]:
        return [e for e in scaler_lines(kube_node, ns) if e.get("paused_uploads") == 1]
    wait_for(left_out, what="a poll that left the paused upload out", timeout=60, interval=1)
    mark = len(scaler_lines(kube_node, ns))
    time.sleep(WINDOW_S)  # 20 polls
    polls = left_out()
    assert len(polls) >= WINDOW_S / 0.5 / 2, len(polls)
    assert all((p["depth"], p["uploads"], p["create"]) == (0, 0, 0) for p in polls), polls[-1]
    # Before the pod's network and the Services were up its first polls may have failed; none since.
    said = [e.get("message") for e in scaler_lines(kube_node, ns)]
    assert "poll crashed" not in said and "poll failed" not in said[mark - 1:], said
    assert worker_jobs(kube_node, ns) == []

    resume(kube_node, ns, upload_id)
    jobs = wait_for(lambda: (lambda j: j if len(j) == 3 else None)(worker_jobs(kube_node, ns)),
                    what="3 Jobs for the resumed upload", timeout=30, interval=0.5)
    assert len(jobs) == 3
    created = next(e for e in scaler_lines(kube_node, ns) if e.get("message") == "jobs created")
    assert (created["depth"], created["uploads"], created["paused_uploads"]) == (ROWS, 1, 0)
