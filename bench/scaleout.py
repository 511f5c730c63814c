"""Scale-out: seconds to drain 100k rows end to end on the local cluster, 1 Job allowed and 4.

From the start of POST /upload until the queue is empty and every worker Job is Complete.
The scaler and the workers run as pods on the node agent with the shipped settings (only
SCALER_MAX_JOBS changes); the producer is the same code, run beside the cluster.
"""

import time

from kubernetes import client, utils

from bench import cluster, support


def _unfinished(batch: client.BatchV1Api, namespace: str) -> int:
    jobs = batch.list_namespaced_job(namespace, label_selector="app=worker-job").items
    done = {"Complete", "Failed"}
    return sum(1 for job in jobs if not any(c.type in done and c.status == "True" for c in job.status.conditions or []))


def _drain_seconds(api: client.ApiClient, path, *, max_jobs: int) -> float:
    namespace = queue = f"bench-scaleout-{max_jobs}"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="rabbitmq-credentials"),
                             string_data={"username": "guest", "password": "guest"})
    core.create_namespaced_secret(namespace, secret)
    docs = cluster.app_documents(QUEUE_NAME=queue, SCALER_MAX_JOBS=str(max_jobs))
    # The producer runs beside the cluster: a second producer pod would want port 8000 too.
    docs = [d for d in docs if d["metadata"]["name"] != "producer"]
    support.delete_queue(queue)
    try:
        utils.create_from_yaml(api, yaml_objects=docs, namespace=namespace)
        with support.producer(queue) as (url, _pid):
            started = time.perf_counter()
            support.upload(url, path)
            while support.depth(queue) or _unfinished(batch, namespace):
                time.sleep(0.2)
            return time.perf_counter() - started
    finally:
        core.delete_namespace(namespace)
        support.delete_queue(queue)


def run(rows: int = 100_000) -> dict[str, float]:
    path = support.sample_csv(rows)
    with cluster.control_plane(node=True) as (_kubeconfig, api):
        one = _drain_seconds(api, path, max_jobs=1)
        four = _drain_seconds(api, path, max_jobs=4)
    return {"drain_100k_s_1_job": round(one, 1), "drain_100k_s_4_jobs": round(four, 1)}
