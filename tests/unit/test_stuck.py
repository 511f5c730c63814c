"""Which worker pods are stuck, from the pod list's own fields and timestamps."""

from datetime import UTC, datetime

import pytest

from scaler.pods import view
from scaler.stuck import PodView, stuck_pods

NOW = 10_000.0


def pod(**fields) -> PodView:
    return PodView(**{"name": "worker-job-abc-x1", "job_name": "worker-job-abc", "job_uid": "u1",
                      "created": NOW - 300} | fields)


CASES = [
    # the pod, -> the reason reported (None: not stuck), why
    (pod(), None, "pending without a reason is starting, not stuck"),
    (pod(unschedulable=(NOW - 121, "0/1 nodes are available")), "Unschedulable", "unschedulable past the grace"),
    (pod(unschedulable=(NOW - 119, "0/1 nodes are available")), None, "unschedulable, grace not over"),
    (pod(waiting=(("ImagePullBackOff", "Back-off pulling image"),)), "ImagePullBackOff", "bad image"),
    (pod(waiting=(("ErrImagePull", "not found"),)), "ErrImagePull", "bad image, the other phase"),
    (pod(waiting=(("InvalidImageName", "bad ref"),)), "InvalidImageName", "unparseable image"),
    (pod(waiting=(("CrashLoopBackOff", "back-off 40s"),)), "CrashLoopBackOff", "crash loop"),
    (pod(waiting=(("CreateContainerConfigError", "secret not found"),)), "CreateContainerConfigError",
     "a missing Secret"),
    (pod(waiting=(("ContainerCreating", ""),)), None, "creating is progress"),
    (pod(waiting=(("ImagePullBackOff", "x"),), created=NOW - 60), None, "a young pod waits its grace"),
]


@pytest.mark.parametrize(("the_pod", "reason", "why"), CASES, ids=[c[-1] for c in CASES])
def test_stuck_table(the_pod, reason, why):
    found = stuck_pods([the_pod], now=NOW, grace_s=120.0)
    assert [s.reason for s in found] == ([reason] if reason else []), why


def test_the_kubelet_s_two_names_for_a_bad_image_are_one_cause():
    (pulling,) = stuck_pods([pod(waiting=(("ErrImagePull", ""),))], now=NOW, grace_s=0)
    (backing_off,) = stuck_pods([pod(waiting=(("ImagePullBackOff", ""),))], now=NOW, grace_s=0)
    assert pulling.cause == backing_off.cause != stuck_pods(
        [pod(waiting=(("CrashLoopBackOff", ""),))], now=NOW, grace_s=0)[0].cause


def test_a_pod_is_read_from_the_api_s_json_with_its_job_its_scheduling_and_its_containers():
    created, unschedulable_since = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    the_pod = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z", "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}]},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/1 nodes", "lastTransitionTime": "2026-01-01T00:01:00Z"}],
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                                   "state": {"waiting": {"reason": "ErrImagePull", "message": "nope"}}}]},
    }
    assert view(the_pod) == PodView("p", "j", "u", created.timestamp(),
                                    unschedulable=(unschedulable_since.timestamp(), "0/1 nodes"),
                                    waiting=(("ErrImagePull", "nope"),))


def test_a_pod_just_created_has_no_status_yet():
    assert view({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}}) == PodView(
        "p", "", "", datetime(2026, 1, 1, tzinfo=UTC).timestamp())
