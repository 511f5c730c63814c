"""The poll loop: read the queue and the Jobs, decide, create; back off when a read fails."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from scaler.decide import Decision, decide
from scaler.jobs import KubeError
from scaler.queue_counts import QueueCounts, QueueReadError, StatsNotReady

log = logging.getLogger(__name__)


class QueueReader(Protocol):
    """Where the counts come from: scaler.queue_live.LiveQueue, or the management API alone."""

    def read(self) -> QueueCounts: ...


class WorkerJobs(Protocol):
    """Where the Jobs are counted and made: scaler.jobs.Jobs; raises KubeError when it can't."""

    def count_unfinished(self) -> int: ...

    def create(self) -> str: ...


@dataclass(frozen=True)
class Limits:
    """The decision's knobs, from the settings."""

    threshold: int
    messages_per_job: int
    max_jobs: int
    small_backlog_wait_s: float


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
    if failures == 0:
        return poll_s
    return min(poll_s * 2 ** min(failures, 32), cap_s)


class Scaler:
    """Polls the queue and the Jobs and creates the Jobs the decision asks for."""

    def __init__(self, *, queue: QueueReader, jobs: WorkerJobs, limits: Limits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._queue, self._jobs, self._limits, self._clock = queue, jobs, limits, clock
        self._small_backlog = SmallBacklogClock()

    def poll_once(self) -> Decision:
        """One poll; raises QueueReadError or KubeError before creating anything it can't back."""
        counts = self._queue.read()
        unfinished = self._jobs.count_unfinished()
        age = self._small_backlog.age(now=self._clock(), counts=counts, unfinished_jobs=unfinished)
        decision = decide(
            depth=counts.messages, unfinished_jobs=unfinished, backlog_age_s=age,
            threshold=self._limits.threshold, messages_per_job=self._limits.messages_per_job,
            max_jobs=self._limits.max_jobs, small_backlog_wait_s=self._limits.small_backlog_wait_s,
        )
        created: list[str] = []
        try:
            for _ in range(decision.create):
                created.append(self._jobs.create())
        finally:
            # Logged even when a create fails part-way, so the line shows what does exist.
            log.info("poll", extra={
                "depth": counts.messages, "ready": counts.messages_ready,
                "unacked": counts.messages_unacknowledged, "consumers": counts.consumers,
                "unfinished_jobs": unfinished, "backlog_age_s": round(age, 1),
                "create": decision.create, "reason": decision.reason, "jobs_created": created,
            })
        return decision

    def run(self, stop: threading.Event, *, poll_s: float, max_backoff_s: float) -> None:
        """Poll until `stop` is set; errors are logged and retried, never raised."""
        failures = 0
        while not stop.is_set():
            try:
                self.poll_once()
                failures = 0
            except StatsNotReady as exc:
                # The broker is healthy, so backing off would only delay the first Job.
                log.warning("poll failed", extra=_failure(exc, failures, poll_s, max_backoff_s))
            except (QueueReadError, KubeError) as exc:
                failures += 1
                log.warning("poll failed", extra=_failure(exc, failures, poll_s, max_backoff_s))
            except Exception as exc:
                failures += 1
                log.exception("poll crashed", extra=_failure(exc, failures, poll_s, max_backoff_s))
            stop.wait(backoff_s(failures, poll_s=poll_s, cap_s=max_backoff_s))


def _failure(exc: Exception, failures: int, poll_s: float, cap_s: float) -> dict[str, object]:
    return {
        "error": str(exc), "error_type": type(exc).__name__, "failures": failures,
        "retry_in_s": backoff_s(failures, poll_s=poll_s, cap_s=cap_s),
    }
