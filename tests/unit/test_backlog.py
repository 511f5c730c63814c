"""What the backlog is, as a table: which uploads' queues count, and how their counts add up."""

import pytest

from kubejob.ledger import OpenUpload
from scaler.backlog import Served, served, total
from scaler.queue_counts import QueueCounts
from scaler.queue_live import Live

LIMIT = "rows.limit"


def upload(name: str, *, paused: bool = False, cancelled: bool = False, finished: bool = False,
           queue: str | None = None) -> OpenUpload:
    return OpenUpload(name, "acme", 1, queue or f"rows.upload.{name}", paused, cancelled, finished)


@pytest.mark.parametrize(("uploads", "expected"), [
    ([], Served((), uploads=0, paused=0, ended=0)),
    ([upload("a"), upload("b")], Served(("rows.upload.a", "rows.upload.b"), uploads=2, paused=0, ended=0)),
    ([upload("a", paused=True), upload("b")], Served(("rows.upload.b",), uploads=1, paused=1, ended=0)),
    ([upload("a", cancelled=True), upload("b", finished=True)], Served((), uploads=0, paused=0, ended=2)),
    # Cancelled while paused: it will never be served again, so it is ended, not paused.
    ([upload("a", paused=True, cancelled=True)], Served((), uploads=0, paused=0, ended=1)),
], ids=["none open", "two served", "one paused", "cancelled and finished", "paused then cancelled"])
def test_only_the_served_uploads_queues_are_read(uploads, expected):
    assert served(uploads) == expected


def test_two_uploads_sum_and_the_limit_queue_adds_its_ready_rows():
    what = served(uploads=[upload("a"), upload("b")])
    live = {"rows.upload.a": Live(30, 0), "rows.upload.b": Live(45, 0), LIMIT: Live(5, 0)}
    assert total(what, limit_queue=LIMIT, live=live, unacked={}) == QueueCounts(
        80, 80, 0, 0, uploads=2, queues=3)


def test_a_paused_upload_s_rows_do_not_count():
    what = served(uploads=[upload("a", paused=True), upload("b")])
    counts = total(what, limit_queue=LIMIT, live={"rows.upload.b": Live(7, 0)}, unacked={})
    assert (counts.messages, counts.uploads, counts.paused_uploads, counts.queues) == (7, 1, 1, 2)


def test_an_all_paused_backlog_is_empty():
    what = served(uploads=[upload("a", paused=True), upload("b", paused=True)])
    counts = total(what, limit_queue=LIMIT, live={LIMIT: Live(0, 0)}, unacked={})
    assert (counts.messages, counts.paused_uploads, counts.queues) == (0, 2, 1)


def test_a_queue_that_no_longer_exists_counts_zero_and_is_said():
    what = served(uploads=[upload("a"), upload("b")])
    counts = total(what, limit_queue=LIMIT, live={"rows.upload.b": Live(12, 0)}, unacked={"rows.upload.a": 9})
    assert (counts.messages, counts.missing_queues) == (12, 1)


def test_unacked_count_only_where_the_queue_has_consumers_and_consumers_are_the_most_of_any_queue():
    what = served(uploads=[upload("a"), upload("b"), upload("c")])
    live = {"rows.upload.a": Live(10, 2), "rows.upload.b": Live(4, 2), "rows.upload.c": Live(1, 0), LIMIT: Live(0, 1)}
    # c has no consumer: what the management API still lists as unacked there (stale statistics) is not held.
    unacked = {"rows.upload.a": 3, "rows.upload.b": 5, "rows.upload.c": 8}
    assert total(what, limit_queue=LIMIT, live=live, unacked=unacked) == QueueCounts(
        23, 15, 8, 2, uploads=3, queues=4)


def test_a_queue_too_new_for_statistics_counts_no_unacked_and_is_said():
    what = served(uploads=[upload("a"), upload("b")])
    live = {"rows.upload.a": Live(10, 1), "rows.upload.b": Live(4, 1)}
    counts = total(what, limit_queue=LIMIT, live=live, unacked={"rows.upload.a": 3, "rows.upload.b": None})
    assert (counts.messages, counts.messages_unacknowledged, counts.unacked_unknown) == (17, 3, 1)
