"""Reads the worker Jobs' pods through the Kubernetes API, for scaler.stuck to judge."""

from datetime import datetime
from typing import Any

from kubernetes import client

from scaler import job_template
from scaler.kube import list_items
from scaler.stuck import PodView

# Every call this module makes to the API, as scaler/jobs.py declares its own.
PERMISSIONS = frozenset({("", "pods", "list")})


class WorkerPods:
    """The pods of the worker Jobs in one namespace, found by the label the Jobs give them."""

    def __init__(self, api: client.CoreV1Api, *, namespace: str, timeout_s: float) -> None:
        self._api, self._namespace, self._timeout_s = api, namespace, timeout_s

    def read(self) -> list[PodView]:
        """Every pod labelled app=worker-job that has not ended; raises KubeError."""
        listed = list_items("list pods", self._api.list_namespaced_pod, self._namespace,
                            label_selector=job_template.LABEL_SELECTOR, timeout_s=self._timeout_s)
        return [view(pod) for pod in listed if (pod.get("status") or {}).get("phase") in ("Pending", "Running")]


def view(pod: dict[str, Any]) -> PodView:
    """The parts of a pod (the API's JSON) that say whether it is stuck."""
    metadata, status = pod["metadata"], pod.get("status") or {}
    owner: dict[str, Any] = next((o for o in metadata.get("ownerReferences") or [] if o["kind"] == "Job"), {})
    scheduled: dict[str, Any] = next((c for c in status.get("conditions") or [] if c["type"] == "PodScheduled"), {})
    unschedulable = None
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        since = scheduled.get("lastTransitionTime") or metadata.get("creationTimestamp")
        unschedulable = (_seconds(since), scheduled.get("message") or "")
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    waiting = tuple((s["state"]["waiting"].get("reason") or "", s["state"]["waiting"].get("message") or "")
                    for s in containers if (s.get("state") or {}).get("waiting") is not None)
    return PodView(name=metadata["name"], job_name=owner.get("name", ""), job_uid=owner.get("uid", ""),
                   created=_seconds(metadata.get("creationTimestamp")), unschedulable=unschedulable,
                   waiting=waiting)


def _seconds(when: str | None) -> float:
    """Unix seconds of an API timestamp (RFC 3339, e.g. 2026-01-01T00:01:00Z)."""
    return datetime.fromisoformat(when).timestamp() if when else 0.0
