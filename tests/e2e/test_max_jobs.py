"""A 100k-row backlog drained by real worker Jobs, the real scaler capped at SCALER_MAX_JOBS.

Every change to the namespace's Jobs is watched for the whole drain, so a moment with one
Job too many cannot slip between two polls of the test.
"""

import threading
import time

from kubernetes import client, watch

from kubejob.message import dead_letter_queue
from scaler.job_template import LABEL_SELECTOR
from scaler.jobs import is_finished
from tests.helpers import wait_for
from tests.helpers.broker import rows
from tests.helpers.kube import app_documents
from tests.helpers.scaler_process import ScalerProcess

MESSAGES = 100_000
MAX_JOBS = 3
DRAIN_TIMEOUT = 300.0


class JobWatch:
    """Follows the worker Jobs of a namespace and keeps the most that were ever unfinished at once."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.batch, self.namespace = client.BatchV1Api(api), namespace
        self.jobs: dict[str, client.V1Job] = {}
        self.max_unfinished = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        listed = self.batch.list_namespaced_job(namespace, label_selector=LABEL_SELECTOR)
        for job in listed.items:
            self._record("ADDED", job)
        self._thread = threading.Thread(target=self._follow, args=(listed.metadata.resource_version,),
                                        daemon=True)
        self._thread.start()

    def unfinished(self) -> int:
        # By the scaler's own definition: the cap is on what the scaler can count.
        return sum(1 for job in self.jobs.values() if not is_finished(job))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _follow(self, resource_version: str) -> None:
        try:
            while not self._stop.is_set():
                # Short server-side timeouts so stop() is noticed; the resource version loses nothing.
                for event in watch.Watch().stream(self.batch.list_namespaced_job, self.namespace,
                                                  label_selector=LABEL_SELECTOR, timeout_seconds=2,
                                                  resource_version=resource_version):
                    self._record(event["type"], event["object"])
                    resource_version = event["object"].metadata.resource_version
        except Exception as exc:
            self.error = exc

    def _record(self, kind: str, job: client.V1Job) -> None:
        if kind == "DELETED":
            self.jobs.pop(job.metadata.name, None)
        else:
            self.jobs[job.metadata.name] = job
        self.max_unfinished = max(self.max_unfinished, self.unfinished())


def test_a_100k_backlog_never_has_more_than_max_jobs_unfinished(kube_cluster, node_agent, broker, queue_name,
                                                               namespace, tmp_path):
    # The worker Jobs' envFrom and secretKeyRefs: the shipped settings, this queue, a handler that does nothing.
    settings = app_documents(QUEUE_NAME=queue_name, WORKER_HANDLER="worker.handlers:noop")
    kube_cluster.apply(namespace, [d for d in settings if d["metadata"]["name"] == "kube-job-config"])
    kube_cluster.create_credentials(namespace, user=broker.user, password=broker.password)
    broker.publish_rows(queue_name, rows(MESSAGES), confirm=False)
    # Without confirms the count is the proof that the broker has them all.
    wait_for(lambda: broker.depth(queue_name) == MESSAGES, what=f"{MESSAGES} messages in {queue_name}",
             timeout=120, interval=1)
    jobs = JobWatch(kube_cluster.api_client(), namespace)
    scaler = ScalerProcess(
        tmp_path / "scaler.log", QUEUE_NAME=queue_name, POD_NAMESPACE=namespace,
        KUBECONFIG=str(kube_cluster.kubeconfig),
        RABBITMQ_MANAGEMENT_URL=broker.management_url, RABBITMQ_USER=broker.user, RABBITMQ_PASSWORD=broker.password,
        SCALER_MAX_JOBS=str(MAX_JOBS), SCALER_MESSAGES_PER_JOB="500", SCALER_POLL_SECONDS="0.5",
    )
    began = time.monotonic()
    try:
        def drained():
            assert jobs.error is None, f"the Job watch failed: {jobs.error!r}"
            return jobs.jobs and jobs.unfinished() == 0 and broker.depth(queue_name) == 0
        wait_for(drained, what=f"{MESSAGES} rows to drain and every Job to end", timeout=DRAIN_TIMEOUT, interval=1)
        time.monotonic() - began
        assert scaler.alive(), scaler.log_path.read_text()[-3000:]
    finally:
        scaler.stop()
        jobs.stop()

    succeeded = {name: bool(job.status.succeeded) for name, job in jobs.jobs.items()}
    # Polls that saw a backlog wanting more Jobs and declined because of the cap.
    at_cap = [e for e in scaler.events() if e.get("reason") == f"at max jobs ({MAX_JOBS})"]
    assert jobs.max_unfinished <= MAX_JOBS
    assert jobs.max_unfinished == MAX_JOBS  # the cap was reached, so the bound was really tested
    assert len(at_cap) >= 5 and all(e["create"] == 0 and e["depth"] > 500 * MAX_JOBS for e in at_cap[:5])
    assert all(succeeded.values()), succeeded
    with broker.connection() as conn:
        dead = conn.channel().queue_declare(dead_letter_queue(queue_name), passive=True).method.message_count
    assert dead == 0
