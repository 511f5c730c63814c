"""Scale-out: seconds to drain 100k rows end to end on the local cluster, 1 Job allowed and 4.

From the start of POST /upload until the queue is empty and every worker Job has finished.
The scaler and the workers run as pods on the node agent with the shipped settings (only
SCALER_MAX_JOBS changes); the producer is the same code, run beside the cluster.
"""

import time

from kubernetes import client, utils

from bench import cluster, support
from scaler.job_template import LABEL_SELECTOR
from scaler.jobs import is_finished
from tests.helpers.kube import app_documents
from tests.helpers.producer import producer, upload


def _unfinished(batch: client.BatchV1Api, namespace: str) -> int:
    jobs = batch.list_namespaced_job(namespace, label_selector=LABEL_SELECTOR).items
    return sum(1 for job in jobs if not is_finished(job))


def _drain_seconds(api: client.ApiClient, path, *, max_jobs: int) -> float:
    namespace = queue = f"bench-scaleout-{max_jobs}"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="rabbitmq-credentials"),
                             string_data={"username": "guest", "password": "guest"})
    core.create_namespaced_secret(namespace, secret)
    database = client.V1Secret(metadata=client.V1ObjectMeta(name="postgres-credentials"),
                               string_data={"username": "kubejob", "password": "kubejob"})  # scripts/postgres.sh's
    core.create_namespaced_secret(namespace, database)
    docs = app_documents(QUEUE_NAME=queue, SCALER_MAX_JOBS=str(max_jobs))
    # The producer runs beside the cluster: a second producer pod would want port 8000 too.
    docs = [d for d in docs if d["metadata"]["name"] != "producer"]
    support.broker.delete_queue(queue)
    try:
        utils.create_from_yaml(api, yaml_objects=docs, namespace=namespace)
        with producer(queue) as (url, _pid):
            started = time.perf_counter()
            upload(url, path)
            while support.broker.depth(queue) or _unfinished(batch, namespace):
                time.sleep(0.2)
            return time.perf_counter() - started
    finally:
        core.delete_namespace(namespace)
        support.broker.delete_queue(queue)


def run(rows: int = 100_000) -> dict[str, float]:
    path = support.sample_csv(rows)
    with cluster.control_plane(node_agent=True) as (_kubeconfig, api):
        one = _drain_seconds(api, path, max_jobs=1)
        four = _drain_seconds(api, path, max_jobs=4)
    return {"drain_100k_s_1_job": round(one, 1), "drain_100k_s_4_jobs": round(four, 1)}
