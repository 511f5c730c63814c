"""Which acks settle rows that finish out of delivery order (worker.settle.Acks), and when a worker is idle."""

from hypothesis import given
from hypothesis import strategies as st

from worker.consumer import idle_for
from worker.settle import Acks


def delivered(*tags: int) -> Acks:
    acks = Acks()
    acks.delivered(list(tags), ["u1"] * len(tags))
    return acks


def test_rows_held_are_counted_by_upload_until_acked_or_given_back() -> None:
    acks = Acks()
    acks.delivered([1, 2, 3, 4], ["a", "b", "a", "a"])
    assert (acks.held("a"), acks.held("b")) == (3, 1)
    acks.returned([3])  # given back: its upload was paused
    assert acks.succeeded([1, 2]) == (2, [])
    assert (acks.held("a"), acks.held("b")) == (1, 0)
    assert acks.succeeded([4]) == (4, []), "a multiple ack may cover a tag given back: the broker has it already"
    assert acks.held("a") == 0


def test_rows_finishing_in_order_take_one_multiple_ack() -> None:
    assert delivered(1, 2, 3).succeeded([1, 2, 3]) == (3, [])


def test_a_row_behind_one_still_running_is_acked_alone_and_holds_nothing_back() -> None:
    acks = delivered(1, 2, 3, 4)
    assert acks.succeeded([2, 3]) == (None, [2, 3])
    assert acks.succeeded([1]) == (1, [])
    assert acks.succeeded([4]) == (4, [])


def test_successes_behind_a_failure_being_copied_wait_for_its_confirm_and_go_in_one_multiple_ack() -> None:
    acks = delivered(1, 2, 3)
    acks.copying(1)
    assert acks.succeeded([2, 3]) == (None, [])
    assert acks.succeeded([1]) == (3, [])  # its copy is confirmed


def test_successes_behind_a_row_in_its_handler_go_alone_even_behind_a_copy() -> None:
    acks = delivered(1, 2, 3, 4)
    acks.copying(1)
    assert acks.succeeded([3]) == (None, [3])  # 2, in its handler, is ahead of it
    assert acks.succeeded([1]) == (1, [])  # 1's copy confirmed
    assert acks.succeeded([4]) == (None, [4])
    assert acks.succeeded([2]) == (2, [])


def test_a_success_waiting_behind_a_copy_keeps_waiting_while_later_rows_go_alone() -> None:
    acks = delivered(1, 2, 3, 4)
    acks.copying(1)
    assert acks.succeeded([2]) == (None, [])  # only a copy is ahead of it
    assert acks.succeeded([4]) == (None, [4])  # 3, in its handler, is ahead of it
    assert acks.succeeded([1]) == (2, [])
    assert acks.succeeded([3]) == (3, [])


@given(st.permutations(range(1, 40)), st.integers(1, 39))
def test_every_success_is_acked_once_and_a_multiple_ack_never_covers_a_row_in_hand(
        order: list[int], batch: int) -> None:
    acks, acked = delivered(*range(1, 40)), set[int]()
    for start in range(0, len(order), batch):
        finished = order[start:start + batch]
        multiple, alone = acks.succeeded(finished)
        in_hand = set(order[start + batch:])
        if multiple is not None:
            covered = {tag for tag in range(1, multiple + 1) if tag not in acked}
            assert not covered & in_hand
            acked |= covered
        assert not acked & set(alone)
        acked |= set(alone)
    assert acked == set(range(1, 40))


def test_a_row_sent_to_wait_for_its_retry_keeps_the_worker_from_idling_until_it_is_due_back() -> None:
    # It is in neither queue for a moment on its way back, so the worker cannot count on seeing it there.
    assert idle_for(now=10.0, last_activity=4.0, retries_back_at=9.5) == 0.5
    assert idle_for(now=10.0, last_activity=4.0, retries_back_at=11.0) < 0
    assert idle_for(now=10.0, last_activity=4.0, retries_back_at=0.0) == 6.0
