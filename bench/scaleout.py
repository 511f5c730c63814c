"""Scale-out: seconds to drain 100k rows end to end on the one-node cluster, 1 Job allowed and 4.

From the start of POST /upload until the queue is empty and every worker Job has finished.
infra/k8s runs as shipped in a namespace of its own (only SCALER_MAX_JOBS changes), RabbitMQ and
PostgreSQL included; the upload goes through `kubectl port-forward` to the producer's Service.
"""

import time

import httpx
from kubernetes import client

from bench import cluster, support
from scaler.job_template import LABEL_SELECTOR
from scaler.jobs import is_finished
from tests.helpers.kube import KubeCluster, deploy, queue_depths


def _unfinished(batch: client.BatchV1Api, namespace: str) -> int:
    jobs = batch.list_namespaced_job(namespace, label_selector=LABEL_SELECTOR).items
    return sum(1 for job in jobs if not is_finished(job))


def _drain_seconds(kube: KubeCluster, path, *, max_jobs: int) -> float:
    namespace = kube.namespace()
    batch = client.BatchV1Api(kube.api_client())
    try:
        token = deploy(kube, namespace, SCALER_MAX_JOBS=str(max_jobs))
        with kube.port_forward("service/producer", 8000, namespace=namespace) as port, open(path, "rb") as f:
            started = time.perf_counter()
            httpx.post(f"http://127.0.0.1:{port}/upload", files={"file": (path.name, f, "text/csv")},
                       headers={"Authorization": f"Bearer {token}"}, timeout=None).raise_for_status()
        while queue_depths(kube, namespace).get("rows") or _unfinished(batch, namespace):
            time.sleep(0.5)
        return time.perf_counter() - started
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false")


def run(rows: int = 100_000) -> dict[str, float]:
    path = support.sample_csv(rows)
    with cluster.node() as kube:
        one = _drain_seconds(kube, path, max_jobs=1)
        four = _drain_seconds(kube, path, max_jobs=4)
    return {"drain_100k_s_1_job": round(one, 1), "drain_100k_s_4_jobs": round(four, 1)}
