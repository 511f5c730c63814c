"""Which Jobs count as unfinished: pending and running do, finished and failed do not."""

import datetime

import pytest
from kubernetes.client import V1Job, V1JobCondition, V1JobStatus, V1ObjectMeta

from scaler.jobs import is_finished


def job(*conditions: tuple[str, str], deleting: bool = False) -> V1Job:
    stamp = datetime.datetime.now(datetime.UTC) if deleting else None
    return V1Job(
        metadata=V1ObjectMeta(name="worker-job-x", deletion_timestamp=stamp),
        status=V1JobStatus(conditions=[V1JobCondition(type=t, status=s) for t, s in conditions]),
    )


@pytest.mark.parametrize(
    ("the_job", "finished"),
    [
        (V1Job(metadata=V1ObjectMeta(name="just-created")), False),  # no status yet: pending
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
