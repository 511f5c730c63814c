"""Reads the worker Jobs' pods through the Kubernetes API, for scaler.stuck to judge."""

from datetime import datetime

from kubernetes import client

from scaler import job_template
from scaler.jobs import call
from scaler.stuck import PodView

# Every call this module makes to the API, as scaler/jobs.py declares its own.
PERMISSIONS = frozenset({("", "pods", "list")})


class WorkerPods:
    """The pods of the worker Jobs in one namespace, found by the label the Jobs give them."""

    def __init__(self, api: client.CoreV1Api, *, namespace: str, timeout_s: float) -> None:
        self._api, self._namespace, self._timeout_s = api, namespace, timeout_s

    def read(self) -> list[PodView]:
        """Every pod labelled app=worker-job that has not ended; raises KubeError."""
        listed = call("list pods", self._api.list_namespaced_pod, self._namespace,
                      label_selector=job_template.LABEL_SELECTOR, timeout_s=self._timeout_s)
        return [view(pod) for pod in listed.items if pod.status and pod.status.phase in ("Pending", "Running")]


def view(pod: client.V1Pod) -> PodView:
    """The parts of a pod that say whether it is stuck."""
    owner = next((o for o in pod.metadata.owner_references or [] if o.kind == "Job"), None)
    status = pod.status
    scheduled = next((c for c in status.conditions or [] if c.type == "PodScheduled"), None)
    unschedulable = None
    if scheduled is not None and scheduled.status == "False" and scheduled.reason == "Unschedulable":
        since = scheduled.last_transition_time or pod.metadata.creation_timestamp
        unschedulable = (_seconds(since), scheduled.message or "")
    waiting = tuple((s.state.waiting.reason or "", s.state.waiting.message or "")
                    for s in [*(status.init_container_statuses or []), *(status.container_statuses or [])]
                    if s.state and s.state.waiting)
    return PodView(name=pod.metadata.name, job_name=owner.name if owner else "", job_uid=owner.uid if owner else "",
                   created=_seconds(pod.metadata.creation_timestamp), unschedulable=unschedulable, waiting=waiting)


def _seconds(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0
