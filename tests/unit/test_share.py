"""The fair share as a table: how a worker's prefetch is divided, and which held row starts next."""

import collections
import itertools

import pytest

from kubejob.ledger import OpenUpload
from kubejob.message import Delivery, Properties
from worker.share import Turns, allocate


def upload(upload_id: str, tenant: str, weight: int = 1) -> OpenUpload:
    return OpenUpload(upload_id, tenant, weight, f"q.upload.{upload_id}", paused=False, cancelled=False,
                      finished=False)


@pytest.mark.parametrize(("uploads", "prefetch", "expected", "why"), [
    ([upload("a1", "A")], 300, {"a1": 300}, "one upload takes it all"),
    ([upload("a1", "A"), upload("b1", "B")], 300, {"a1": 150, "b1": 150}, "two tenants halve it"),
    ([upload("a1", "A"), upload("a2", "A"), upload("b1", "B")], 300, {"a1": 75, "a2": 75, "b1": 150},
     "a tenant's uploads share its half, not the whole"),
    ([upload("a1", "A", 2), upload("b1", "B")], 300, {"a1": 200, "b1": 100}, "weight 2 takes twice the share"),
    ([upload("a1", "A"), upload("b1", "B"), upload("c1", "C")], 100, {"a1": 34, "b1": 33, "c1": 33},
     "the oldest tenant takes what does not divide"),
    ([upload(f"u{n}", f"T{n}") for n in range(5)], 3, {"u0": 1, "u1": 1, "u2": 1},
     "more tenants than slots: the oldest are served, one row each"),
    ([upload("a1", "A"), upload("a2", "A"), upload("a3", "A"), upload("b1", "B")], 4,
     {"a1": 1, "a2": 1, "b1": 2}, "a tenant's third upload waits for a slot; the other tenant keeps its half"),
    ([], 300, {}, "nothing open, no consumer"),
])
def test_allocate(uploads: list[OpenUpload], prefetch: int, expected: dict[str, int], why: str) -> None:
    shares = allocate(uploads, prefetch)
    assert shares == expected, why
    assert sum(shares.values()) <= prefetch


def delivery(tag: int, upload_id: str) -> Delivery:
    return Delivery(tag, Properties("application/json", {"upload_id": upload_id, "row": tag}, 2, None), b"{}",
                    False)


def held(turns: Turns, rows: dict[str, int]) -> None:
    tags = itertools.count(len(turns) + 1)
    for upload_id, count in rows.items():
        for _ in range(count):
            turns.add(delivery(next(tags), upload_id))


def started(turns: Turns, count: int) -> list[str]:
    taken = [turns.take() for _ in range(count)]
    return [str(d.properties.headers["upload_id"]) for d in taken if d is not None]


def test_a_small_upload_behind_a_large_one_starts_every_other_row() -> None:
    turns = Turns()
    turns.know([upload("big", "A"), upload("small", "B")])
    held(turns, {"big": 300})
    assert started(turns, 10) == ["big"] * 10
    held(turns, {"small": 5})
    assert started(turns, 10) == ["big", "small"] * 5, "a newcomer starts level, not 10 rows ahead or behind"
    assert started(turns, 3) == ["big"] * 3, "once the small one is done the big one has every start"


def test_tenants_share_by_weight_and_a_tenants_uploads_share_its_part() -> None:
    turns = Turns()
    turns.know([upload("a1", "A", 2), upload("b1", "B"), upload("b2", "B")])
    held(turns, {"a1": 600, "b1": 300, "b2": 300})
    counts = collections.Counter(started(turns, 600))
    assert counts == {"a1": 400, "b1": 100, "b2": 100}


def test_three_tenants_get_a_third_each() -> None:
    turns = Turns()
    turns.know([upload("a", "A"), upload("b", "B"), upload("c", "C")])
    held(turns, {"a": 1000, "b": 1000, "c": 1000})
    assert collections.Counter(started(turns, 900)) == {"a": 300, "b": 300, "c": 300}


def test_rows_of_one_upload_start_in_delivery_order() -> None:
    turns = Turns()
    turns.know([upload("a", "A")])
    held(turns, {"a": 5})
    assert [d.tag for d in (turns.take() for _ in range(5)) if d] == [1, 2, 3, 4, 5]
    assert turns.take() is None


def test_withdrawn_rows_are_not_started_and_the_rest_keep_their_turns() -> None:
    turns = Turns()
    turns.know([upload("a", "A"), upload("b", "B"), upload("c", "C")])
    held(turns, {"a": 10, "b": 10, "c": 10})
    withdrawn = turns.withdraw({"b", "nowhere"})
    assert len(withdrawn) == 10 and {str(d.properties.headers["upload_id"]) for d in withdrawn} == {"b"}
    assert len(turns) == 20
    assert collections.Counter(started(turns, 20)) == {"a": 10, "c": 10}


def test_a_row_of_an_upload_the_ledger_does_not_have_open_is_still_started() -> None:
    turns = Turns()
    turns.know([])
    held(turns, {"by-hand": 2})
    assert started(turns, 3) == ["by-hand", "by-hand"]
