"""A 100k-row backlog drained by real worker Jobs, the scaler's Deployment capped at SCALER_MAX_JOBS.

infra/k8s runs as shipped in a namespace of the one-node cluster, but for the cap, the poll
period and a handler that does nothing. Every change to the namespace's Jobs is watched for the
whole drain, so a moment with one Job too many cannot slip between two polls of the test.
"""

import json
import threading

from kubernetes import client, watch

from kubejob.message import dead_letter_queue
from scaler.job_template import LABEL_SELECTOR
from scaler.jobs import is_finished
from tests.helpers import wait_for
from tests.helpers.cluster_uploads import backlog, publish_upload
from tests.helpers.kube import deploy, queue_depths

MESSAGES = 100_000
MAX_JOBS = 3
DRAIN_TIMEOUT = 300.0


class JobWatch:
    """Follows the worker Jobs of a namespace and keeps the most that were ever unfinished at once."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.batch, self.namespace = client.BatchV1Api(api), namespace
        self.jobs: dict[str, dict] = {}  # name -> the Job as the API's JSON, as the scaler reads it
        self.max_unfinished = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        listed = json.loads(self.batch.list_namespaced_job(namespace, label_selector=LABEL_SELECTOR,
                                                           _preload_content=False).data)
        for job in listed["items"]:
            self._record("ADDED", job)
        self._thread = threading.Thread(target=self._follow, args=(listed["metadata"]["resourceVersion"],),
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
                    self._record(event["type"], event["raw_object"])
                    resource_version = event["raw_object"]["metadata"]["resourceVersion"]
        except Exception as exc:  # a blind watch must fail the test, not pass it
            self.error = exc

    def _record(self, kind: str, job: dict) -> None:
        if kind == "DELETED":
            self.jobs.pop(job["metadata"]["name"], None)
        else:
            self.jobs[job["metadata"]["name"]] = job
        self.max_unfinished = max(self.max_unfinished, self.unfinished())


def test_a_100k_backlog_never_has_more_than_max_jobs_unfinished(kube_node, node_namespace):
    ns = node_namespace
    # LOG_LEVEL DEBUG: the scaler logs every poll then, not only when its decision changes.
    deploy(kube_node, ns, WORKER_HANDLER="worker.handlers:noop", SCALER_MAX_JOBS=str(MAX_JOBS),
           SCALER_MESSAGES_PER_JOB="500", SCALER_POLL_SECONDS="0.5", LOG_LEVEL="DEBUG")
    jobs = JobWatch(kube_node.api_client(), ns)
    try:
        publish_upload(kube_node, ns, "rows", MESSAGES)

        def drained():
            assert jobs.error is None, f"the Job watch failed: {jobs.error!r}"
            return jobs.jobs and jobs.unfinished() == 0 and backlog(kube_node, ns, "rows") == 0
        wait_for(drained, what=f"{MESSAGES} rows to drain and every Job to end", timeout=DRAIN_TIMEOUT, interval=2)
        events = [json.loads(line) for line in kube_node.kubectl(
            "logs", "deployment/scaler", "-n", ns, "--tail=-1").stdout.splitlines() if line.startswith("{")]
        depths = queue_depths(kube_node, ns)
    finally:
        jobs.stop()

    succeeded = {name: bool(job["status"].get("succeeded")) for name, job in jobs.jobs.items()}
    # Polls that saw a backlog wanting more Jobs and declined because of the cap.
    at_cap = [e for e in events if e.get("reason") == f"at max jobs ({MAX_JOBS})"]
    assert jobs.max_unfinished <= MAX_JOBS
    assert jobs.max_unfinished == MAX_JOBS  # the cap was reached, so the bound was really tested
    assert len(at_cap) >= 5 and all(e["create"] == 0 and e["depth"] > 500 * MAX_JOBS for e in at_cap[:5])
    assert all(succeeded.values()), succeeded
    assert (backlog(kube_node, ns, "rows"), depths[dead_letter_queue("rows")]) == (0, 0), depths
