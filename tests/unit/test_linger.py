"""When a worker waits for more rows before handing out a thin delivery, or recording finished ones (worker.linger)."""

import pytest

from worker.linger import READ_EVERY_S, Linger, gather_for
from worker.settings import Settings


def test_a_few_rows_with_none_behind_them_are_waited_on() -> None:
    assert Linger(0.05, prefetch=100).due(now=0.0, arrived=3, ready=lambda: 0)


def test_a_few_rows_with_a_backlog_behind_them_are_handed_out_at_once() -> None:
    assert not Linger(0.05, prefetch=100).due(now=0.0, arrived=3, ready=lambda: 5000)


def test_a_pass_with_no_rows_or_with_half_the_prefetch_is_not_waited_on_and_reads_nothing() -> None:
    linger, reads = Linger(0.05, prefetch=100), []

    def ready() -> int:
        reads.append(0)
        return 0

    assert not linger.due(now=0.0, arrived=0, ready=ready)  # woken for an ack
    assert not linger.due(now=0.0, arrived=50, ready=ready)
    assert reads == []


def test_the_depth_is_read_from_the_broker_at_most_once_a_period() -> None:
    linger, depths = Linger(0.05, prefetch=100), iter([0, 7000])
    assert linger.due(now=10.0, arrived=3, ready=lambda: next(depths))
    assert linger.due(now=10.0 + READ_EVERY_S / 2, arrived=3, ready=lambda: next(depths))
    assert not linger.due(now=10.0 + READ_EVERY_S, arrived=3, ready=lambda: next(depths))


def test_zero_seconds_never_waits() -> None:
    assert not Linger(0.0, prefetch=100).due(now=0.0, arrived=1, ready=lambda: 0)


def test_finished_rows_wait_for_the_handlers_still_running_up_to_the_linger() -> None:
    assert gather_for(0.05, 150, finished=32, running=True, since=10.0, now=10.02) == pytest.approx(0.03)
    assert gather_for(0.05, 150, finished=32, running=True, since=10.0, now=10.07) == 0.0


def test_finished_rows_are_recorded_at_once_when_a_batch_finished_or_no_handler_runs() -> None:
    assert gather_for(0.05, 150, finished=150, running=True, since=10.0, now=10.0) == 0.0
    assert gather_for(0.05, 150, finished=3, running=False, since=10.0, now=10.0) == 0.0


def test_one_row_at_a_time_never_gathers() -> None:
    assert gather_for(0.05, 1, finished=1, running=True, since=10.0, now=10.0) == 0.0


def test_a_batch_is_half_the_prefetch_and_a_single_handlers_rows_are_recorded_as_they_finish() -> None:
    assert Settings(worker_concurrency=32, worker_prefetch=300).batch_rows == 150
    assert Settings(worker_concurrency=100, worker_prefetch=10).batch_rows == 100  # the prefetch is raised to 200
    assert Settings(worker_concurrency=1, worker_prefetch=300).batch_rows == 1
