"""The loop's pure parts: how long a small backlog has waited, and how long to back off."""

import pytest

from scaler.loop import SmallBacklogClock, backoff_s
from scaler.queue_depth import QueueCounts


def counts(messages: int, consumers: int = 0) -> QueueCounts:
    return QueueCounts(messages, messages, 0, consumers)


def test_small_backlog_ages_from_the_first_poll_that_saw_it_unattended():
    clock = SmallBacklogClock()
    assert clock.age(now=100.0, counts=counts(3), unfinished_jobs=0) == 0.0
    assert clock.age(now=130.0, counts=counts(5), unfinished_jobs=0) == 30.0


@pytest.mark.parametrize(
    "attended, unfinished",
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
    "failures, expected",
    [(0, 1.0), (1, 2.0), (2, 4.0), (4, 16.0), (5, 30.0), (10_000, 30.0)],
)
def test_backoff_doubles_from_the_poll_interval_up_to_the_cap(failures, expected):
    assert backoff_s(failures, poll_s=1.0, cap_s=30.0) == expected
