"""Which Jobs count as unfinished: pending and running do, finished and failed do not."""

import pytest

from scaler.job_template import HASH_ANNOTATION
from scaler.jobs import JobView, is_finished, view


def job(*conditions: tuple[str, str], deleting: bool = False) -> dict:
    """A Job as the API's JSON gives it."""
    metadata = {"name": "worker-job-x"} | ({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})
    return {"metadata": metadata, "status": {"conditions": [{"type": t, "status": s} for t, s in conditions]}}


@pytest.mark.parametrize(
    ("the_job", "finished"),
    [
        ({"metadata": {"name": "just-created"}}, False),  # no status yet: pending
        (job(), False),
        (job(("Suspended", "False")), False),
        (job(("Complete", "True")), True),
        (job(("Failed", "True")), True),  # a failed Job is not pending work
        (job(("FailureTarget", "True")), True),
        (job(("SuccessCriteriaMet", "True")), True),
        (job(("Complete", "False")), False),
        (job(deleting=True), True),
    ],
    ids=["no status", "no conditions", "suspended false", "complete", "failed",
         "failure target", "success criteria met", "complete false", "being deleted"],
)
def test_is_finished(the_job, finished):
    assert is_finished(the_job) is finished


@pytest.mark.parametrize(
    ("status", "state"),
    [(None, "pending"), ({"ready": 0}, "pending"), ({"ready": 1}, "running"),
     ({"conditions": [{"type": "Failed", "status": "True"}]}, "failed"),
     ({"conditions": [{"type": "Complete", "status": "True"}]}, "complete")],
    ids=["no status", "no pod ready", "a pod ready", "failed", "complete"],
)
def test_a_job_is_read_from_the_api_s_json_with_its_state_and_its_template_s_hash(status, state):
    listed = {"metadata": {"name": "worker-job-a", "uid": "u1", "annotations": {HASH_ANNOTATION: "h1"}}}
    assert view(listed | ({"status": status} if status else {})) == JobView("worker-job-a", "u1", state, "h1")
