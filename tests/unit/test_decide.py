"""The scaling decision, case by case: read this table first."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaler.decide import KINDS, decide

# threshold 20, 500 messages per Job, at most 5 Jobs, a small backlog waits 60 s.
DEFAULTS = {"threshold": 20, "messages_per_job": 500, "max_jobs": 5, "small_backlog_wait_s": 60.0}

CASES = [
    # depth, unfinished, backlog age, -> create, the rule (kind), the reason logged (in part), why
    (0, 0, 0.0, 0, "queue_empty", "queue empty", "nothing queued"),
    (0, 3, 0.0, 0, "queue_empty", "queue empty", "nothing queued, jobs finishing"),
    # threshold: at or below it, nothing starts until the small backlog has waited
    (20, 0, 0.0, 0, "small_backlog_waiting", "small backlog waiting 0s of 60s", "at the threshold is a small backlog"),
    (21, 0, 0.0, 1, "scale_up", "backlog needs 1 jobs", "just above the threshold starts one job"),
    # backlog sizing: one job per 500 messages, rounded up
    (500, 0, 0.0, 1, "scale_up", "backlog needs 1 jobs", "exactly one job's worth"),
    (501, 0, 0.0, 2, "scale_up", "backlog needs 2 jobs", "one message more needs a second job"),
    (1500, 0, 0.0, 3, "scale_up", "backlog needs 3 jobs", "three jobs' worth"),
    # max jobs
    (2501, 0, 0.0, 5, "scale_up", "backlog needs 5 jobs", "six jobs' worth is capped at max"),
    (100_000, 0, 0.0, 5, "scale_up", "backlog needs 5 jobs", "a huge backlog is capped at max"),
    (100_000, 5, 0.0, 0, "at_max_jobs", "at max jobs (5)", "at max already"),
    (100_000, 7, 0.0, 0, "at_max_jobs", "at max jobs (5)", "above max (max was lowered) creates nothing"),
    # unfinished jobs (running or still pending) count against what is wanted
    (1500, 1, 0.0, 2, "scale_up", "backlog needs 3 jobs", "one unfinished job: two more"),
    (1500, 3, 0.0, 0, "enough_jobs", "3 unfinished", "enough unfinished jobs: no duplicates while pods start"),
    (1500, 4, 0.0, 0, "enough_jobs", "4 unfinished", "more unfinished than wanted: never negative"),
    (100_000, 3, 0.0, 2, "scale_up", "backlog needs 5 jobs", "only up to max in total"),
    # small backlog waiting with no worker
    (5, 0, 59.9, 0, "small_backlog_waiting", "small backlog waiting 59s of 60s", "not waited long enough"),
    (5, 0, 60.0, 1, "small_backlog_waited", "small backlog waited 60s", "small backlog waited long enough: one job"),
    (20, 0, 3600.0, 1, "small_backlog_waited", "small backlog waited 3600s", "waited an hour: still one job"),
    (5, 1, 3600.0, 0, "small_backlog_attended", "a job is unfinished", "a job unfinished: none more"),
]


@pytest.mark.parametrize(
    ("depth", "unfinished", "age", "expected", "kind", "reason", "why"), CASES, ids=[case[-1] for case in CASES]
)
def test_decision_table(depth, unfinished, age, expected, kind, reason, why):
    decision = decide(depth=depth, unfinished_jobs=unfinished, backlog_age_s=age, **DEFAULTS)
    assert decision.create == expected, why
    # The reason is what an operator reads in the poll line: it must name the rule and its numbers.
    assert reason in decision.reason, (why, decision.reason)
    assert decision.kind == kind, why


def test_zero_wait_starts_a_job_for_the_first_small_message():
    settings = {**DEFAULTS, "small_backlog_wait_s": 0.0}
    assert decide(depth=1, unfinished_jobs=0, backlog_age_s=0.0, **settings).create == 1


def test_threshold_zero_sizes_any_backlog():
    settings = {**DEFAULTS, "threshold": 0}
    assert decide(depth=1, unfinished_jobs=0, backlog_age_s=0.0, **settings).create == 1


@given(
    depth=st.integers(0, 10**7),
    unfinished=st.integers(0, 50),
    threshold=st.integers(0, 1000),
    per_job=st.integers(1, 10_000),
    max_jobs=st.integers(1, 50),
    age=st.floats(0, 10**5),
)
def test_never_exceeds_max_and_never_negative(depth, unfinished, threshold, per_job, max_jobs, age):
    decision = decide(
        depth=depth, unfinished_jobs=unfinished, threshold=threshold,
        messages_per_job=per_job, max_jobs=max_jobs, backlog_age_s=age, small_backlog_wait_s=60,
    )
    assert 0 <= decision.create <= max(0, max_jobs - unfinished)
    if depth == 0:
        assert decision.create == 0


def test_each_kind_is_one_rule_whatever_its_numbers():
    # The kind is a metric label: as many series as rules, not one per depth.
    kinds: dict[str, set[int]] = {}
    for depth, unfinished, age, create, *_ in CASES:
        decision = decide(depth=depth, unfinished_jobs=unfinished, backlog_age_s=age, **DEFAULTS)
        kinds.setdefault(decision.kind, set()).add(create > 0)
    # backing_off is scaler.backoff's rule, applied after this decision.
    assert set(kinds) == set(KINDS) - {"backing_off"}
    assert all(len(creates) == 1 for creates in kinds.values()), kinds
