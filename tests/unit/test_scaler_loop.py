"""The loop's policy: how long a small backlog has waited, when to back off, what is logged.

The loop is pure policy over a QueueReader and the Jobs, so these tests give it small in-memory
stand-ins; the real readers and the real apiserver are in tests/integration.
"""

import logging
import threading

import pytest

from scaler.jobs import KubeError
from scaler.loop import Limits, Scaler, SmallBacklogClock, backoff_s
from scaler.queue_counts import QueueCounts, QueueReadError, StatsNotReady

LIMITS = Limits(threshold=20, messages_per_job=500, max_jobs=5, small_backlog_wait_s=60.0)
POLL_S, CAP_S = 0.01, 0.08


def counts(messages: int, consumers: int = 0) -> QueueCounts:
    return QueueCounts(messages, messages, 0, consumers)


def test_small_backlog_ages_from_the_first_poll_that_saw_it_unattended():
    clock = SmallBacklogClock()
    assert clock.age(now=100.0, counts=counts(3), unfinished_jobs=0) == 0.0
    assert clock.age(now=130.0, counts=counts(5), unfinished_jobs=0) == 30.0


@pytest.mark.parametrize(
    ("attended", "unfinished"),
    [(counts(0), 0), (counts(3, consumers=1), 0), (counts(3), 1)],
    ids=["queue emptied", "a consumer appeared", "a job exists"],
)
def test_the_clock_restarts_once_the_backlog_is_attended(attended, unfinished):
    clock = SmallBacklogClock()
    clock.age(now=100.0, counts=counts(3), unfinished_jobs=0)
    assert clock.age(now=150.0, counts=attended, unfinished_jobs=unfinished) == 0.0
    assert clock.age(now=160.0, counts=counts(3), unfinished_jobs=0) == 0.0
    assert clock.age(now=170.0, counts=counts(3), unfinished_jobs=0) == 10.0


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (4, 16.0), (5, 30.0), (10_000, 30.0)],
)
def test_backoff_doubles_from_the_poll_interval_up_to_the_cap(failures, expected):
    assert backoff_s(failures, poll_s=1.0, cap_s=30.0) == expected


class Readings:
    """A QueueReader that returns (or raises) each of `script` in turn, and stops the loop after the last."""

    def __init__(self, *script: QueueCounts | Exception) -> None:
        self.script, self.stop = list(script), threading.Event()

    def read(self) -> QueueCounts:
        item = self.script.pop(0)
        if not self.script:
            self.stop.set()
        if isinstance(item, Exception):
            raise item
        return item


class JobList:
    """The worker Jobs, in memory: `unfinished` of them, and `create` fails once `fail_create_at` were made."""

    def __init__(self, *, unfinished: int = 0, count_error: Exception | None = None,
                 fail_create_at: int | None = None) -> None:
        self.unfinished, self.count_error, self.fail_create_at = unfinished, count_error, fail_create_at
        self.created: list[str] = []

    def count_unfinished(self) -> int:
        if self.count_error is not None:
            raise self.count_error
        return self.unfinished + len(self.created)

    def create(self) -> str:
        if len(self.created) == self.fail_create_at:
            raise KubeError("create job: HTTP 500 etcd timeout")
        self.created.append(f"worker-job-{len(self.created)}")
        return self.created[-1]


def run(readings: Readings, jobs: JobList, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Run the loop until `readings` is used up; return its log lines."""
    with caplog.at_level(logging.INFO, logger="scaler"):
        Scaler(queue=readings, jobs=jobs, limits=LIMITS).run(readings.stop, poll_s=POLL_S, max_backoff_s=CAP_S)
    return [r for r in caplog.records if r.name == "scaler.loop"]


def test_stats_not_ready_polls_on_at_the_poll_interval(caplog):
    # The broker is healthy and the counts come within a statistics interval: backing off would
    # only delay the first Job.
    lines = run(Readings(*[StatsNotReady("queue statistics lack messages")] * 3, counts(1500)), JobList(), caplog)
    failed = [r for r in lines if r.getMessage() == "poll failed"]
    assert [(r.error_type, r.failures, r.retry_in_s) for r in failed] == [("StatsNotReady", 0, POLL_S)] * 3
    assert lines[-1].getMessage() == "poll" and lines[-1].create == 3


@pytest.mark.parametrize(
    ("readings", "count_error"),
    [
        ([QueueReadError("management API answered HTTP 500")] * 4, None),
        ([counts(1500)] * 4, KubeError("list jobs: API unreachable")),
    ],
    ids=["queue unreadable", "jobs uncountable"],
)
def test_a_failed_read_creates_nothing_and_backs_off_doubling_to_the_cap(readings, count_error, caplog):
    jobs = JobList(count_error=count_error)
    lines = run(Readings(*readings), jobs, caplog)
    failed = [r for r in lines if r.getMessage() == "poll failed"]
    assert [r.retry_in_s for r in failed[:4]] == [2 * POLL_S, 4 * POLL_S, CAP_S, CAP_S]
    assert [r.failures for r in failed[:4]] == [1, 2, 3, 4]
    assert jobs.created == []


def test_one_good_poll_ends_the_backoff(caplog):
    error = QueueReadError("management API timed out after 1.0s")
    lines = run(Readings(error, error, error, counts(0), error), JobList(), caplog)
    failed = [r for r in lines if r.getMessage() == "poll failed"]
    assert [r.failures for r in failed] == [1, 2, 3, 1]
    assert failed[-1].retry_in_s == 2 * POLL_S


def test_a_create_failing_part_way_still_logs_the_poll_with_the_jobs_that_exist(caplog):
    jobs = JobList(fail_create_at=1)
    lines = run(Readings(counts(1500)), jobs, caplog)
    assert [r.getMessage() for r in lines] == ["poll", "poll failed"]
    poll, failed = lines
    assert (poll.depth, poll.create, poll.jobs_created) == (1500, 3, ["worker-job-0"])
    assert (failed.error_type, failed.failures, failed.retry_in_s) == ("KubeError", 1, 2 * POLL_S)
    assert "HTTP 500" in failed.error


def test_a_surprise_is_logged_in_full_and_the_loop_goes_on(caplog):
    lines = run(Readings(ValueError("a bug"), counts(0)), JobList(), caplog)
    assert [r.getMessage() for r in lines] == ["poll crashed", "poll"]
    assert lines[0].exc_info and lines[0].failures == 1
