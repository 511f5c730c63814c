"""Counts and creates the worker Jobs through the Kubernetes API.

Errors: every call goes through scaler.kube, so a failure is a `KubeError` and the loop never
creates Jobs on a count it did not get.
"""

from dataclasses import dataclass
from typing import Any

from kubernetes import client

from scaler import job_template
from scaler.kube import call, list_items

# Every call this module makes to the API, as (apiGroup, resource, verb). The Role in
# infra/k8s/scaler.yaml grants exactly these (tests/unit/test_scaler_manifest.py checks it, and
# tests/integration/test_scaler_on_cluster.py that the apiserver allows nothing more).
PERMISSIONS = frozenset({("batch", "jobs", "list"), ("batch", "jobs", "create")})

# Conditions after which a Job's pods will not take more messages. FailureTarget and
# SuccessCriteriaMet are set (Kubernetes 1.31+) just before Failed and Complete.
_FAILED = {"Failed", "FailureTarget"}
_COMPLETE = {"Complete", "SuccessCriteriaMet"}
_FINISHED = _FAILED | _COMPLETE


@dataclass(frozen=True)
class Unfinished:
    """Unfinished worker Jobs: `running` have a ready pod, `pending` none yet (starting, or between retries)."""

    pending: int
    running: int

    @property
    def total(self) -> int:
        return self.pending + self.running


@dataclass(frozen=True)
class JobView:
    """One worker Job as the scaler sees it: `state` is one of running, pending, failed, complete, finished."""

    name: str
    uid: str
    state: str
    template_hash: str = ""


@dataclass(frozen=True)
class CreatedJob:
    name: str
    uid: str


class Jobs:
    """The worker Jobs of one namespace, found by their label."""

    def __init__(self, api: client.BatchV1Api, *, namespace: str, template: dict[str, Any],
                 timeout_s: float) -> None:
        self._api, self._namespace, self._template = api, namespace, template
        self._timeout_s = timeout_s
        self.template_hash = job_template.template_hash(template)

    def read(self) -> list[JobView]:
        """Every Job labelled app=worker-job, read live."""
        listed = list_items("list jobs", self._api.list_namespaced_job, self._namespace,
                            label_selector=job_template.LABEL_SELECTOR, timeout_s=self._timeout_s)
        return [view(job) for job in listed]

    def unfinished(self) -> Unfinished:
        """Jobs labelled app=worker-job that have not completed or failed, read live."""
        return count_unfinished(self.read())

    def create(self) -> CreatedJob:
        """Create one Job from the template; return its generated name and uid."""
        body = job_template.render(self._template, namespace=self._namespace)
        created = self._call("create job", self._api.create_namespaced_job, self._namespace, body)
        return CreatedJob(created.metadata.name, created.metadata.uid)

    def _call(self, what: str, method, *args, **kwargs):
        return call(what, method, *args, timeout_s=self._timeout_s, **kwargs)


def view(job: dict[str, Any]) -> JobView:
    """What the scaler needs of a Job (the API's JSON)."""
    metadata = job["metadata"]
    annotations = metadata.get("annotations") or {}
    return JobView(metadata["name"], metadata["uid"], _state(job), annotations.get(job_template.HASH_ANNOTATION, ""))


def count_unfinished(jobs: list[JobView], *, uncounted: frozenset[str] = frozenset()) -> Unfinished:
    """The unfinished Jobs, but for those whose uid is `uncounted`."""
    counted = [job for job in jobs if job.uid not in uncounted]
    running = sum(1 for job in counted if job.state == "running")
    return Unfinished(pending=sum(1 for job in counted if job.state == "pending"), running=running)


def _state(job: dict[str, Any]) -> str:
    status = job.get("status") or {}
    if not is_finished(job):
        return "running" if (status.get("ready") or 0) > 0 else "pending"
    true = {c["type"] for c in status.get("conditions") or [] if c["status"] == "True"}
    if true & _FAILED:
        return "failed"
    return "complete" if true & _COMPLETE else "finished"


def is_finished(job: dict[str, Any]) -> bool:
    """Whether the Job (the API's JSON) will take no more messages: done, failed, or being deleted."""
    # A Job being deleted is finished for our purpose: its pods are going away.
    if job["metadata"].get("deletionTimestamp") is not None:
        return True
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in _FINISHED and c["status"] == "True" for c in conditions)
