"""The scaling decision: how many Jobs to start, as a pure function of what was read."""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """How many Jobs to create now, and the rule that chose it: `kind` names the rule (a metric
    label, one of KINDS), `reason` says it with its numbers (logged)."""

    create: int
    reason: str
    kind: str


# The last is scaler.backoff's, which holds back what this decision asked for.
KINDS = ("queue_empty", "small_backlog_attended", "small_backlog_waiting", "small_backlog_waited",
         "at_max_jobs", "enough_jobs", "scale_up", "backing_off")


def decide(
    *,
    depth: int,
    unfinished_jobs: int,
    threshold: int,
    messages_per_job: int,
    max_jobs: int,
    backlog_age_s: float,
    small_backlog_wait_s: float,
) -> Decision:
    """Jobs to create for `depth` messages when `unfinished_jobs` already exist."""
    if depth <= 0:
        return Decision(0, "queue empty", "queue_empty")
    if depth <= threshold:
        return _small_backlog(unfinished_jobs, backlog_age_s, small_backlog_wait_s)
    # Like KEDA's default strategy: every unfinished Job counts, pending or running, so a
    # pod that is slow to start never causes a duplicate; finished ones (failed too) don't.
    wanted = min(math.ceil(depth / messages_per_job), max_jobs)
    if unfinished_jobs >= max_jobs:
        return Decision(0, f"at max jobs ({max_jobs})", "at_max_jobs")
    if unfinished_jobs >= wanted:
        return Decision(0, f"backlog needs {wanted} jobs, {unfinished_jobs} unfinished", "enough_jobs")
    return Decision(wanted - unfinished_jobs, f"backlog needs {wanted} jobs", "scale_up")


def _small_backlog(unfinished_jobs: int, age_s: float, wait_s: float) -> Decision:
    if unfinished_jobs > 0:
        return Decision(0, "small backlog, a job is unfinished", "small_backlog_attended")
    # Whole seconds waited, rounded down: 59.9 s rounded would read "waiting 60s of 60s".
    if age_s >= wait_s:
        return Decision(1, f"small backlog waited {int(age_s)}s >= {wait_s:g}s", "small_backlog_waited")
    return Decision(0, f"small backlog waiting {int(age_s)}s of {wait_s:g}s", "small_backlog_waiting")
