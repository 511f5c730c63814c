"""Which worker pods are stuck, as a pure function of what the pod list said and the time.

A pod is stuck when it cannot make progress on its own: the scheduler found no node for it
(PodScheduled=False, reason Unschedulable), or a container waits for a reason that a retry of
the same spec does not cure (an image that cannot be pulled, a crash loop, a missing Secret).
It counts as stuck once that has lasted `grace_s`, timed from the API's own timestamps, so a
scaler that restarts knows at once what was stuck before it.
"""

from dataclasses import dataclass

# Container waiting reasons that mean the pod will not run as specified.
STUCK_WAITING = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError")
# The kubelet alternates these two for one cause: reported once, not once for each.
_SAME_CAUSE = {"ErrImagePull": "ImagePullBackOff"}


@dataclass(frozen=True)
class PodView:
    """What the scaler reads of one worker pod; times are Unix seconds."""

    name: str
    job_name: str
    job_uid: str
    created: float
    # (since, message) when the scheduler marked it Unschedulable.
    unschedulable: tuple[float, str] | None = None
    # (reason, message) of each waiting container.
    waiting: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Stuck:
    """A pod stuck for `for_s` seconds, with the reason and message the API gave."""

    pod: str
    job_name: str
    job_uid: str
    reason: str
    message: str
    for_s: float

    @property
    def cause(self) -> str:
        """The reason, with the kubelet's alternating names for one cause made one."""
        return _SAME_CAUSE.get(self.reason, self.reason)


def stuck_pods(pods: list[PodView], *, now: float, grace_s: float) -> list[Stuck]:
    """The pods that have been stuck for at least `grace_s` at `now`."""
    found = []
    for pod in pods:
        problem = _problem(pod)
        if problem is not None:
            reason, message, since = problem
            if now - since >= grace_s:
                found.append(Stuck(pod.name, pod.job_name, pod.job_uid, reason, message, round(now - since, 1)))
    return found


def _problem(pod: PodView) -> tuple[str, str, float] | None:
    if pod.unschedulable is not None:
        since, message = pod.unschedulable
        return "Unschedulable", message, since
    for reason, message in pod.waiting:
        if reason in STUCK_WAITING:
            # The kubelet gives no time for a waiting reason: the pod's age stands in for it.
            return reason, message, pod.created
    return None
