"""Reaction: seconds from publishing a backlog above the threshold to the first Job in the API.

The real scaler process runs with the settings infra/k8s/config.yaml ships, against the
local control plane, RabbitMQ started with infra/rabbitmq/rabbitmq.conf and a ledger of its own.
Each trial is a new upload, recorded in the ledger and its queue declared before its rows are
published, as the producer does; it starts at a random moment of the poll cycle, so the figures
include the wait for the next poll.
"""

import os
import random
import statistics
import subprocess
import sys
import time
import uuid

import psycopg
from kubernetes import client, watch

from bench import cluster, support
from kubejob import ledger, message
from scaler.job_template import LABEL_SELECTOR
from tests.helpers import REPO_ROOT, die_with_parent
from tests.helpers.kube import shipped_settings
from tests.helpers.ledger import as_database_url, fresh_database, record_upload

NAMESPACE = "bench-reaction"
QUEUE = "bench-reaction"


def _first_job_after(batch: client.BatchV1Api, published: float, resource_version: str) -> float:
    stream = watch.Watch()
    jobs = stream.stream(batch.list_namespaced_job, NAMESPACE, label_selector=LABEL_SELECTOR,
                         resource_version=resource_version, timeout_seconds=60)
    for event in jobs:
        if event["type"] == "ADDED":
            stream.stop()
            return time.perf_counter() - published
    raise TimeoutError("no Job within 60 s")


def _reset(batch: client.BatchV1Api, poll_s: float) -> None:
    """No open upload, and no Job."""
    support.broker.delete_queue(QUEUE)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("DELETE FROM uploads")
    time.sleep(poll_s * 2)  # Jobs the scaler made from counts read before the reset exist now
    batch.delete_collection_namespaced_job(NAMESPACE, label_selector=LABEL_SELECTOR, propagation_policy="Background")
    while batch.list_namespaced_job(NAMESPACE, label_selector=LABEL_SELECTOR).items:
        time.sleep(0.1)


def _trial(batch: client.BatchV1Api, backlog: list, poll_s: float, chance: random.Random) -> float:
    _reset(batch, poll_s)
    time.sleep(chance.uniform(0, poll_s))
    seen = batch.list_namespaced_job(NAMESPACE, label_selector=LABEL_SELECTOR).metadata.resource_version
    upload_id = uuid.uuid4().hex
    record_upload(upload_id, queue=message.upload_queue(QUEUE, upload_id), rows=len(backlog))
    with support.broker.connection() as conn:
        channel = conn.channel()
        queue = support.broker.declare_upload(channel, QUEUE, upload_id)
        published = time.perf_counter()
        for body, properties in backlog:
            channel.basic_publish("", queue, body, properties)
    return _first_job_after(batch, published, seen)


def run(trials: int = 20) -> dict[str, float]:
    shipped = shipped_settings()
    backlog = support.encoded_messages(support.sample_csv(1000), limit=int(shipped["SCALER_THRESHOLD"]) * 5)
    with cluster.control_plane() as (kubeconfig, api), fresh_database() as url, as_database_url(url):
        ledger.migrate(url)
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        env = os.environ | shipped | {
            "RABBITMQ_HOST": "localhost", "RABBITMQ_MANAGEMENT_URL": "http://localhost:15672",
            "QUEUE_NAME": QUEUE, "POD_NAMESPACE": NAMESPACE, "KUBECONFIG": str(kubeconfig), "LOG_LEVEL": "WARNING",
            "DATABASE_URL": url,
        }
        scaler = subprocess.Popen(die_with_parent([sys.executable, "-m", "scaler"]), cwd=REPO_ROOT, env=env)
        try:
            chance = random.Random(7)
            poll_s = float(shipped["SCALER_POLL_SECONDS"])
            seconds = [_trial(batch, backlog, poll_s, chance) for _ in range(trials)]
        finally:
            scaler.terminate()
            scaler.wait(timeout=30)
            support.broker.delete_queue(QUEUE)
            batch.delete_collection_namespaced_job(NAMESPACE, label_selector=LABEL_SELECTOR)
    quantiles = statistics.quantiles(seconds, n=20, method="inclusive")
    return {"reaction_p50_s": round(statistics.median(seconds), 3), "reaction_p95_s": round(quantiles[18], 3)}
