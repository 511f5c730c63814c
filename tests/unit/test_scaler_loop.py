"""The loop's policy: how long a small backlog has waited, when to back off, what is logged.

The loop is pure policy over a QueueReader and the Jobs, so these tests give it small in-memory
stand-ins; the real readers and the real apiserver are in tests/integration.
"""

import logging
import threading

import pytest

from kubejob.errors import LedgerUnavailable
from scaler.jobs import CreatedJob, JobView
from scaler.kube import KubeError
from scaler.loop import Limits, Scaler, SmallBacklogClock, backoff_s
from scaler.queue_counts import QueueCounts, QueueReadError, StatsNotReady
from scaler.stuck import PodView

LIMITS = Limits(threshold=20, messages_per_job=500, max_jobs=5, small_backlog_wait_s=60.0, stuck_s=120.0,
                job_backoff_s=10.0, job_backoff_max_s=600.0)
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

    template_hash = "current"

    def __init__(self, *, unfinished: int = 0, count_error: Exception | None = None,
                 fail_create_at: int | None = None) -> None:
        self.count_error, self.fail_create_at = count_error, fail_create_at
        self.jobs = [JobView(f"old-{n}", f"old-uid-{n}", "pending", "current") for n in range(unfinished)]
        self.created: list[str] = []

    def read(self) -> list[JobView]:
        if self.count_error is not None:
            raise self.count_error
        return list(self.jobs)

    def create(self) -> CreatedJob:
        if len(self.created) == self.fail_create_at:
            raise KubeError("create job: HTTP 500 etcd timeout", status=500)
        self.created.append(f"worker-job-{len(self.created)}")
        self.jobs.append(JobView(self.created[-1], f"uid-{len(self.created)}", "pending", self.template_hash))
        return CreatedJob(self.created[-1], uid=f"uid-{len(self.created)}")


class PodList:
    """The worker pods, in memory, as a test sets them."""

    def __init__(self) -> None:
        self.pods: list[PodView] = []

    def read(self) -> list[PodView]:
        return list(self.pods)


class EventList:
    """The Events the loop asked for, in memory: (type, about, reason, note, kind)."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str, str, str]] = []

    def job_created(self, job: CreatedJob, note: str) -> None:
        self.recorded.append(("Normal", job.name, "CreatedForBacklog", note, ""))

    def job_warning(self, job_name: str, job_uid: str, reason: str, note: str) -> None:
        self.recorded.append(("Warning", job_name, reason, note, ""))

    def warning(self, reason: str, note: str, *, action: str, kind: str) -> None:
        self.recorded.append(("Warning", "scaler", reason, note, kind))


class Clock:
    """Time that moves one second per queue reading, so a test of the minute summary takes none."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(readings: Readings, jobs: JobList, caplog: pytest.LogCaptureFixture, *, events: EventList | None = None,
        clock: Clock | None = None, summary_s: float = 60.0) -> list[logging.LogRecord]:
    """Run the loop until `readings` is used up; return its log lines, DEBUG included."""
    scaler = Scaler(queue=readings, jobs=jobs, pods=PodList(), limits=LIMITS, events=events or EventList(),
                    clock=clock or Clock())
    with caplog.at_level(logging.DEBUG, logger="scaler"):
        scaler.run(readings.stop, poll_s=POLL_S, max_backoff_s=CAP_S, summary_s=summary_s)
    return [r for r in caplog.records if r.name == "scaler.loop"]


def said(lines: list[logging.LogRecord], level: int = logging.INFO) -> list[str]:
    """What a follower of the log at `level` reads."""
    return [r.getMessage() for r in lines if r.levelno >= level]


def test_stats_not_ready_polls_on_at_the_poll_interval_and_says_so_once(caplog):
    # The broker is healthy and the counts come within a statistics interval: backing off would
    # only delay the first Job, and a warning per poll would cry wolf.
    lines = run(Readings(*[StatsNotReady("queue statistics lack messages")] * 3, counts(1500)), JobList(), caplog)
    waiting = [r for r in lines if r.getMessage() == "queue statistics not ready yet"]
    assert [(r.error_type, r.failures, r.retry_in_s) for r in waiting] == [("StatsNotReady", 0, POLL_S)] * 3
    assert [r.levelname for r in waiting] == ["INFO", "DEBUG", "DEBUG"]
    assert said(lines) == ["queue statistics not ready yet", "jobs created"]
    assert lines[-1].create == 3


def test_idle_polls_are_debug_with_one_alive_line_a_minute(caplog):
    clock = Clock()
    readings = Readings(*[counts(0)] * 150)
    tick = readings.read

    def read() -> QueueCounts:
        clock.now += 1.0
        return tick()
    readings.read = read
    lines = run(readings, JobList(), caplog, clock=clock, summary_s=60.0)
    assert said(lines) == ["decision changed", "alive", "alive"]
    assert [r.getMessage() for r in lines].count("poll") == 149
    alive = [r for r in lines if r.getMessage() == "alive"]
    assert [(r.polls, r.jobs_created, r.failed_polls, r.depth, r.kind) for r in alive] == [
        (60, 0, 0, 0, "queue_empty")] * 2


def test_jobs_created_are_info_and_each_gets_an_event_saying_why(caplog):
    events = EventList()
    lines = run(Readings(counts(1500), counts(1500), counts(1500)), JobList(), caplog, events=events)
    # The second poll finds enough Jobs (a new rule); the third has nothing new to say.
    assert said(lines) == ["jobs created", "decision changed"]
    assert said(lines, logging.DEBUG) == ["jobs created", "decision changed", "poll"]
    note = "queue depth 1500: backlog needs 3 jobs; 3 wanted, 0 unfinished before, at most 5"
    assert events.recorded == [("Normal", f"worker-job-{n}", "CreatedForBacklog", note, "") for n in range(3)]


@pytest.mark.parametrize(
    ("readings", "count_error"),
    [
        ([QueueReadError("management API answered HTTP 500")] * 4, None),
        ([LedgerUnavailable("ledger: OperationalError: connection refused")] * 4, None),
        ([counts(1500)] * 4, KubeError("list jobs: API unreachable")),
    ],
    ids=["queue unreadable", "ledger unreadable", "jobs uncountable"],
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
    events = EventList()
    lines = run(Readings(error, error, error, counts(0), error), JobList(), caplog, events=events)
    failed = [r for r in lines if r.getMessage() == "poll failed"]
    assert [r.failures for r in failed] == [1, 2, 3, 1]
    assert failed[-1].retry_in_s == 2 * POLL_S
    # A follower reads the failure, its recovery, and the failure again; not each repeat.
    assert said(lines) == ["poll failed", "decision changed", "poll recovered", "poll failed"]
    assert [r.levelname for r in failed] == ["WARNING", "DEBUG", "DEBUG", "WARNING"]
    assert [e[2] for e in events.recorded] == ["QueueReadFailed"] * 4
    assert {e[4] for e in events.recorded} == {"QueueReadError None"}


def test_an_unreadable_ledger_is_said_once_with_an_event_each_time_and_its_recovery(caplog):
    error = LedgerUnavailable("ledger: no answer within 5.0s")
    events = EventList()
    lines = run(Readings(error, error, counts(0)), JobList(), caplog, events=events)
    failed = [r for r in lines if r.getMessage() == "poll failed"]
    assert [(r.levelname, r.error_type, r.error) for r in failed] == [
        ("WARNING", "LedgerUnavailable", str(error)), ("DEBUG", "LedgerUnavailable", str(error))]
    assert said(lines) == ["poll failed", "decision changed", "poll recovered"]
    assert [e[2:] for e in events.recorded] == [("LedgerReadFailed", str(error), "LedgerUnavailable")] * 2


def test_the_poll_line_says_how_many_uploads_and_queues_the_depth_came_from_and_what_was_left_out(caplog):
    reading = QueueCounts(1500, 1400, 100, 2, uploads=3, queues=4, paused_uploads=2, ended_uploads=5,
                          missing_queues=1, unacked_unknown=1)
    (line,) = run(Readings(reading), JobList(), caplog)
    assert (line.depth, line.uploads, line.queues, line.paused_uploads, line.ended_uploads, line.missing_queues,
            line.unacked_unknown) == (1500, 3, 4, 2, 5, 1, 1)


def test_a_create_failing_part_way_still_logs_the_poll_with_the_jobs_that_exist(caplog):
    jobs, events = JobList(fail_create_at=1), EventList()
    lines = run(Readings(counts(1500)), jobs, caplog, events=events)
    assert [r.getMessage() for r in lines] == ["jobs created", "poll failed"]
    poll, failed = lines
    assert (poll.depth, poll.create, poll.jobs_created) == (1500, 3, ["worker-job-0"])
    assert (failed.error_type, failed.failures, failed.retry_in_s) == ("KubeError", 1, 2 * POLL_S)
    assert "HTTP 500" in failed.error
    assert [(e[0], e[1], e[2]) for e in events.recorded] == [
        ("Normal", "worker-job-0", "CreatedForBacklog"), ("Warning", "scaler", "JobCreateFailed")]


def test_a_surprise_is_logged_in_full_and_the_loop_goes_on(caplog):
    lines = run(Readings(ValueError("a bug"), counts(0)), JobList(), caplog)
    assert [r.getMessage() for r in lines] == ["poll crashed", "decision changed"]
    assert lines[0].exc_info and lines[0].failures == 1


def stuck_scaler(jobs: JobList, pods: PodList, events: EventList, now: list[float]) -> Scaler:
    return Scaler(queue=Readings(*[counts(1500)] * 100), jobs=jobs, pods=pods, limits=LIMITS, events=events,
                  clock=lambda: now[0], wall_clock=lambda: now[0])


def test_a_stuck_pod_is_said_once_per_pod_and_cause_in_a_warning_and_an_event_on_its_job(caplog):
    jobs, pods, events, now = JobList(), PodList(), EventList(), [1000.0]
    the_scaler = stuck_scaler(jobs, pods, events, now)
    with caplog.at_level(logging.INFO, logger="scaler"):
        the_scaler.poll_once()
        pods.pods = [PodView("worker-job-0-p", "worker-job-0", "uid-1", created=1000.0,
                             waiting=(("ErrImagePull", "pull access denied"),))]
        now[0] = 1119.0
        the_scaler.poll_once()  # within the grace period
        for waiting in ("ImagePullBackOff", "ErrImagePull", "ImagePullBackOff"):
            now[0] += 5
            pods.pods = [PodView("worker-job-0-p", "worker-job-0", "uid-1", created=1000.0,
                                 waiting=((waiting, "pull access denied"),))]
            the_scaler.poll_once()
    warned = [r for r in caplog.records if r.getMessage() == "worker pod stuck"]
    assert [(r.levelname, r.job, r.pod, r.reason, r.pod_message) for r in warned] == [
        ("WARNING", "worker-job-0", "worker-job-0-p", "ImagePullBackOff", "pull access denied")]
    stuck_events = [e for e in events.recorded if e[2] == "WorkerPodStuck"]
    assert stuck_events == [("Warning", "worker-job-0", "WorkerPodStuck",
                             "pod worker-job-0-p: ImagePullBackOff for 124 s: pull access denied", "")]


def test_a_stuck_job_of_an_older_template_neither_counts_nor_holds_back_the_fixed_one():
    jobs, pods, events, now = JobList(), PodList(), EventList(), [1000.0]
    jobs.jobs = [JobView("old", "u-old", "pending", "older")]
    pods.pods = [PodView("old-p", "old", "u-old", created=0.0, unschedulable=(0.0, "0/1 nodes"))]
    assert stuck_scaler(jobs, pods, events, now).poll_once().create == 3  # 1500 rows want 3 Jobs


def test_a_stuck_job_of_the_current_template_counts_and_holds_back_more_of_the_same():
    jobs, pods, events, now = JobList(), PodList(), EventList(), [1000.0]
    jobs.jobs = [JobView("same", "u-same", "pending", "current")]
    pods.pods = [PodView("same-p", "same", "u-same", created=0.0, unschedulable=(0.0, "0/1 nodes"))]
    the_scaler = stuck_scaler(jobs, pods, events, now)
    assert the_scaler.poll_once().kind == "backing_off"
    now[0] += LIMITS.job_backoff_s
    assert the_scaler.poll_once().create == 2  # the stuck one is one of the 3


def test_failed_jobs_hold_back_the_next_one_and_say_why_once(caplog):
    jobs, pods, events, now = JobList(), PodList(), EventList(), [1000.0]
    jobs.jobs = [JobView("f1", "u-f1", "failed", "current")]
    the_scaler = stuck_scaler(jobs, pods, events, now)
    with caplog.at_level(logging.INFO, logger="scaler"):
        first = the_scaler.poll_once()
        now[0] += 5
        the_scaler.poll_once()
    assert (first.create, first.kind) == (0, "backing_off")
    assert first.reason == "backing off: 1 recent Jobs failed or stuck, queue not shrinking, next Job in 10 s"
    assert [e[2:] for e in events.recorded] == [("BackingOff", f"queue depth 1500: {first.reason}", "backing_off")]
    changed = [r for r in caplog.records if r.getMessage() == "decision changed"]
    assert [(r.kind, r.failing_streak) for r in changed] == [("backing_off", 1)]
    now[0] += 5
    assert the_scaler.poll_once().create == 3  # the wait is over
