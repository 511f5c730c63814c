"""The poll loop: read the queue and the Jobs, decide, create; back off when a read fails.

What it logs is what a follower of the log needs: at INFO a poll that created Jobs or changed
the decision's rule, the first of a run of identical failures and the recovery, and one
"alive" line every SUMMARY_S; the polls in between are DEBUG.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kubejob.backoff import doubling
from kubejob.errors import LedgerUnavailable
from scaler import metrics
from scaler.backoff import JobBackoff
from scaler.decide import Decision, decide
from scaler.jobs import CreatedJob, JobView, Unfinished, count_unfinished
from scaler.kube import KubeError
from scaler.queue_counts import QueueCounts, QueueReadError, StatsNotReady
from scaler.stuck import PodView, Stuck, stuck_pods

log = logging.getLogger(__name__)

# How often a scaler with nothing new to say logs that it is alive.
SUMMARY_S = 60.0


class QueueReader(Protocol):
    """Where the counts come from: scaler.backlog.Backlog; raises QueueReadError or LedgerUnavailable when it can't."""

    def read(self) -> QueueCounts: ...


class WorkerJobs(Protocol):
    """Where the Jobs are listed and made: scaler.jobs.Jobs; raises KubeError when it can't."""

    template_hash: str  # of the template it creates Jobs from

    def read(self) -> list[JobView]: ...

    def create(self) -> CreatedJob: ...


class WorkerPodReader(Protocol):
    """Where the Jobs' pods are read: scaler.pods.WorkerPods; raises KubeError when it can't."""

    def read(self) -> list[PodView]: ...


class EventRecorder(Protocol):
    """Where Kubernetes Events go: scaler.events.Recorder."""

    def job_created(self, job: CreatedJob, note: str) -> None: ...

    def job_warning(self, job_name: str, job_uid: str, reason: str, note: str) -> None: ...

    def warning(self, reason: str, note: str, *, action: str, kind: str) -> None: ...


@dataclass(frozen=True)
class Limits:
    """The decision's knobs, from the settings."""

    threshold: int
    messages_per_job: int
    max_jobs: int
    small_backlog_wait_s: float
    stuck_s: float
    job_backoff_s: float
    job_backoff_max_s: float


class SmallBacklogClock:
    """How long messages have waited with no worker Job and no consumer to take them."""

    def __init__(self) -> None:
        self._since: float | None = None

    def age(self, *, now: float, counts: QueueCounts, unfinished_jobs: int) -> float:
        """Seconds the current backlog has been waiting unattended (0 if attended or empty)."""
        if counts.messages == 0 or unfinished_jobs > 0 or counts.consumers > 0:
            self._since = None
            return 0.0
        if self._since is None:
            self._since = now
        return now - self._since


def backoff_s(failures: int, *, poll_s: float, cap_s: float) -> float:
    """Wait before the next poll after `failures` failed polls in a row (0 = healthy)."""
    return poll_s if failures == 0 else doubling(poll_s, failures, cap_s=cap_s)


class Scaler:
    """Polls the queue and the Jobs and creates the Jobs the decision asks for."""

    def __init__(self, *, queue: QueueReader, jobs: WorkerJobs, pods: WorkerPodReader, limits: Limits,
                 events: EventRecorder, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._queue, self._jobs, self._pods, self._limits, self._clock = queue, jobs, pods, limits, clock
        self._events, self._wall_clock = events, wall_clock
        self._small_backlog = SmallBacklogClock()
        self._backoff = JobBackoff(first_s=limits.job_backoff_s, cap_s=limits.job_backoff_max_s)
        self._reported: set[tuple[str, str]] = set()  # (pod, cause) already said to be stuck
        self._last_kind: str | None = None
        self._last_error: tuple[str, str] | None = None
        self._failing_since: float | None = None
        self._since_summary = {"polls": 0, "failed_polls": 0, "jobs_created": 0}
        self._last_depth: int | None = None

    def poll_once(self) -> Decision:
        """One poll; raises QueueReadError, LedgerUnavailable or KubeError before creating anything it can't back."""
        counts = self._queue.read()
        jobs = self._jobs.read()
        pods = self._pods.read()
        stuck = stuck_pods(pods, now=self._wall_clock(), grace_s=self._limits.stuck_s)
        self._report_stuck(stuck, listed={pod.name for pod in pods})
        stale = self._stale(jobs, stuck)
        unfinished = count_unfinished(jobs, uncounted=stale)
        _observe(counts, unfinished)
        self._last_depth = counts.messages
        now = self._clock()
        # Only Jobs of the current template say whether the next one will fare better.
        current = [job for job in jobs if job.template_hash == self._jobs.template_hash]
        stuck_jobs = frozenset(pod.job_uid for pod in stuck if pod.job_uid) - stale
        grew = self._backoff.observe(
            now=now, depth=counts.messages,
            bad=frozenset(j.uid for j in current if j.state == "failed") | stuck_jobs,
            completed=frozenset(j.uid for j in current if j.state == "complete"),
        )
        age = self._small_backlog.age(now=now, counts=counts, unfinished_jobs=unfinished.total)
        decision = self._backoff.hold(decide(
            depth=counts.messages, unfinished_jobs=unfinished.total, backlog_age_s=age,
            threshold=self._limits.threshold, messages_per_job=self._limits.messages_per_job,
            max_jobs=self._limits.max_jobs, small_backlog_wait_s=self._limits.small_backlog_wait_s,
        ), now=now)
        metrics.DECISIONS.labels(decision.kind).inc()
        if decision.kind == "backing_off" and (grew or self._last_kind != decision.kind):
            self._events.warning("BackingOff", f"queue depth {counts.messages}: {decision.reason}",
                                 action="Create", kind=decision.kind)
        created: list[str] = []
        try:
            for _ in range(decision.create):
                job = self._jobs.create()
                created.append(job.name)
                metrics.JOBS_CREATED.inc()
                self._events.job_created(job, self._why(counts.messages, unfinished.total, decision))
        except KubeError as exc:
            self._events.warning("JobCreateFailed", str(exc), action="Create", kind=str(exc.status))
            raise
        finally:
            # Logged even when a create fails part-way, so the line shows what does exist.
            self._log_poll(decision, created, {
                "depth": counts.messages, "ready": counts.messages_ready,
                "unacked": counts.messages_unacknowledged, "consumers": counts.consumers,
                "uploads": counts.uploads, "queues": counts.queues, "paused_uploads": counts.paused_uploads,
                "ended_uploads": counts.ended_uploads, "missing_queues": counts.missing_queues,
                "unacked_unknown": counts.unacked_unknown,
                "unfinished_jobs": unfinished.total, "pending_jobs": unfinished.pending,
                "running_jobs": unfinished.running, "backlog_age_s": round(age, 1), "stuck_pods": len(stuck),
                "stale_stuck_jobs": len(stale), "failing_streak": self._backoff.streak,
                "create": decision.create, "reason": decision.reason, "kind": decision.kind, "jobs_created": created,
            })
        return decision

    def run(self, stop: threading.Event, *, poll_s: float, max_backoff_s: float, summary_s: float = SUMMARY_S) -> None:
        """Poll until `stop` is set; errors are logged and retried, never raised."""
        failures, next_summary = 0, self._clock() + summary_s
        while not stop.is_set():
            started = time.perf_counter()
            try:
                self.poll_once()
                self._recovered(failures)
                failures = 0
            except StatsNotReady as exc:
                # The broker is healthy, so backing off would only delay the first Job.
                self._failed(exc, failures, poll_s, max_backoff_s)
            except (QueueReadError, LedgerUnavailable, KubeError) as exc:
                failures += 1
                self._failed(exc, failures, poll_s, max_backoff_s)
            except Exception as exc:
                failures += 1
                metrics.POLL_ERRORS.labels(type(exc).__name__).inc()
                log.exception("poll crashed", extra=_failure(exc, failures, poll_s, max_backoff_s))
            metrics.POLL_SECONDS.observe(time.perf_counter() - started)
            if self._clock() >= next_summary:
                self._summarise()
                next_summary = self._clock() + summary_s
            stop.wait(backoff_s(failures, poll_s=poll_s, cap_s=max_backoff_s))

    def _report_stuck(self, stuck: list[Stuck], *, listed: set[str]) -> None:
        """Say once per pod and cause that it is stuck: a WARNING line and a Warning Event on its Job."""
        for pod in stuck:
            if (pod.pod, pod.cause) in self._reported:
                continue
            self._reported.add((pod.pod, pod.cause))
            log.warning("worker pod stuck", extra={"job": pod.job_name, "pod": pod.pod, "reason": pod.reason,
                                                   "pod_message": pod.message, "stuck_s": pod.for_s})
            if pod.job_uid:
                self._events.job_warning(pod.job_name, pod.job_uid, "WorkerPodStuck",
                                         f"pod {pod.pod}: {pod.reason} for {pod.for_s:g} s: {pod.message}")
        # Forget pods that are gone, so the set holds no more than the pods listed.
        self._reported = {key for key in self._reported if key[0] in listed}

    def _stale(self, jobs: list[JobView], stuck: list[Stuck]) -> frozenset[str]:
        """Stuck Jobs of another template than the current one: they will never drain, and the fix is in,
        so they leave room for Jobs of the current template. Stuck Jobs of the current template count:
        more of the same would be stuck too."""
        current = {job.uid for job in jobs if job.template_hash == self._jobs.template_hash}
        return frozenset(pod.job_uid for pod in stuck if pod.job_uid and pod.job_uid not in current)

    def _why(self, depth: int, unfinished: int, decision: Decision) -> str:
        wanted = unfinished + decision.create
        return (f"queue depth {depth}: {decision.reason}; {wanted} wanted, {unfinished} unfinished before, "
                f"at most {self._limits.max_jobs}")

    def _log_poll(self, decision: Decision, created: list[str], fields: dict[str, object]) -> None:
        changed, self._last_kind = decision.kind != self._last_kind, decision.kind
        self._since_summary["polls"] += 1
        self._since_summary["jobs_created"] += len(created)
        if created:
            log.info("jobs created", extra=fields)
        elif changed:
            log.info("decision changed", extra=fields)
        else:
            log.debug("poll", extra=fields)

    def _failed(self, exc: QueueReadError | LedgerUnavailable | KubeError, failures: int, poll_s: float,
                cap_s: float) -> None:
        """Count the failure; log it at INFO or WARNING when it differs from the one before, else at DEBUG."""
        metrics.POLL_ERRORS.labels(type(exc).__name__).inc()
        self._since_summary["failed_polls"] += 1
        error, self._last_error = self._last_error, (type(exc).__name__, str(exc))
        repeated = error == self._last_error
        fields = _failure(exc, failures, poll_s, cap_s)
        if isinstance(exc, StatsNotReady):
            log.log(logging.DEBUG if repeated else logging.INFO, "queue statistics not ready yet", extra=fields)
            return
        if self._failing_since is None:
            self._failing_since = self._clock()
        log.log(logging.DEBUG if repeated else logging.WARNING, "poll failed", extra=fields)
        if isinstance(exc, QueueReadError):
            self._events.warning("QueueReadFailed", str(exc), action="ReadQueue",
                                 kind=f"{type(exc).__name__} {exc.status}")
        elif isinstance(exc, LedgerUnavailable):
            self._events.warning("LedgerReadFailed", str(exc), action="ReadLedger", kind=type(exc).__name__)

    def _recovered(self, failures: int) -> None:
        self._last_error = None
        metrics.LAST_SUCCESS.set_to_current_time()
        if self._failing_since is not None:
            log.info("poll recovered", extra={"failed_polls": failures,
                                              "down_s": round(self._clock() - self._failing_since, 1)})
            self._failing_since = None

    def _summarise(self) -> None:
        log.info("alive", extra=self._since_summary | {"depth": self._last_depth, "kind": self._last_kind})
        self._since_summary = dict.fromkeys(self._since_summary, 0)


def _observe(counts: QueueCounts, unfinished: Unfinished) -> None:
    metrics.QUEUE_MESSAGES.set(counts.messages)
    metrics.QUEUE_READY.set(counts.messages_ready)
    metrics.QUEUE_UNACKED.set(counts.messages_unacknowledged)
    metrics.QUEUE_CONSUMERS.set(counts.consumers)
    for state, uploads in (("served", counts.uploads), ("paused", counts.paused_uploads),
                           ("ended", counts.ended_uploads)):
        metrics.UPLOADS.labels(state).set(uploads)
    metrics.JOBS_UNFINISHED.labels("pending").set(unfinished.pending)
    metrics.JOBS_UNFINISHED.labels("running").set(unfinished.running)


def _failure(exc: Exception, failures: int, poll_s: float, cap_s: float) -> dict[str, object]:
    return {
        "error": str(exc), "error_type": type(exc).__name__, "failures": failures,
        "retry_in_s": backoff_s(failures, poll_s=poll_s, cap_s=cap_s),
    }
