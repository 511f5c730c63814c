"""The wait before the next Job while recent Jobs fail or get stuck and the queue does not shrink."""

import pytest

from kubejob.backoff import doubling
from scaler.backoff import JobBackoff, delay_s
from scaler.decide import KINDS, Decision

WANTS_ONE = Decision(1, "backlog needs 1 jobs", "scale_up")
NONE = frozenset()


@pytest.mark.parametrize(("streak", "expected"), [(1, 10.0), (2, 20.0), (3, 40.0), (6, 320.0), (7, 600.0),
                                                  (10_000, 600.0)])
def test_the_wait_doubles_from_the_first_delay_to_the_cap(streak, expected):
    assert delay_s(streak, first_s=10.0, cap_s=600.0) == expected


def failing(backoff: JobBackoff, *uids: str, now: float, depth: int = 100) -> bool:
    return backoff.observe(now=now, depth=depth, bad=frozenset(uids), completed=NONE)


def test_without_failures_nothing_is_held():
    backoff = JobBackoff(first_s=10, cap_s=600)
    assert not failing(backoff, now=0)
    assert backoff.hold(WANTS_ONE, now=0) == WANTS_ONE


def test_each_failed_job_doubles_the_wait_and_the_reason_says_why():
    backoff = JobBackoff(first_s=10, cap_s=600)
    assert failing(backoff, "a", now=100)
    held = backoff.hold(WANTS_ONE, now=101)
    assert (held.create, held.kind, held.reason) == (
        0, "backing_off", "backing off: 1 recent Jobs failed or stuck, queue not shrinking, next Job in 9 s")
    assert held.kind in KINDS
    assert backoff.hold(WANTS_ONE, now=110) == WANTS_ONE
    # The same failed Job, still listed, is not a new failure; a second one is.
    assert not failing(backoff, "a", now=111)
    assert failing(backoff, "a", "b", now=120)
    assert backoff.hold(WANTS_ONE, now=139).create == 0
    assert backoff.hold(WANTS_ONE, now=140) == WANTS_ONE
    assert failing(backoff, "b", "c", "d", now=200)  # two more at once: 4 in a row
    assert "4 recent Jobs" in backoff.hold(WANTS_ONE, now=200).reason
    assert backoff.wait_s(200) == 80.0


def test_a_decision_to_create_nothing_is_left_as_it_is():
    backoff = JobBackoff(first_s=10, cap_s=600)
    failing(backoff, "a", now=0)
    nothing = Decision(0, "at max jobs (5)", "at_max_jobs")
    assert backoff.hold(nothing, now=1) == nothing


def test_a_completed_job_ends_the_streak():
    backoff = JobBackoff(first_s=10, cap_s=600)
    failing(backoff, "a", "b", now=0)
    backoff.observe(now=1, depth=100, bad=frozenset({"a", "b"}), completed=frozenset({"c"}))
    assert backoff.streak == 0 and backoff.hold(WANTS_ONE, now=1) == WANTS_ONE
    # A completion already seen does not end the next streak.
    backoff.observe(now=2, depth=100, bad=frozenset({"a", "b", "e"}), completed=frozenset({"c"}))
    assert backoff.streak == 1


def test_a_queue_shrinking_below_where_the_streak_began_ends_it():
    backoff = JobBackoff(first_s=10, cap_s=600)
    failing(backoff, "a", now=0, depth=100)
    failing(backoff, "a", now=1, depth=100)
    assert backoff.streak == 1
    failing(backoff, "a", now=2, depth=99)
    assert backoff.streak == 0 and backoff.hold(WANTS_ONE, now=2) == WANTS_ONE


@pytest.mark.parametrize(("step", "wait"), [(0, 0.5), (1, 1.0), (3, 4.0), (4, 5.0), (10_000, 5.0), (-1, 0.5)])
def test_the_one_doubling_wait_starts_at_its_first_doubles_and_stops_at_its_cap(step: int, wait: float) -> None:
    assert doubling(0.5, step, cap_s=5.0) == wait
