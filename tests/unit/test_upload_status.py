"""An upload's state and pace, as GET /uploads/{id} reports them."""

from datetime import UTC, datetime, timedelta

import pytest

from producer.ledger import Upload
from producer.status import pace, status_of

START = datetime(2026, 1, 1, tzinfo=UTC)


def upload(*, rows: int = 100, done: int = 0, failed: int = 0, published: bool = True, publishing: bool = True,
           error: str | None = None, finished_after_s: float | None = None, paused: bool = False,
           cancelled_after_s: float | None = None) -> Upload:
    finished = START + timedelta(seconds=finished_after_s) if finished_after_s is not None else None
    cancelled = START + timedelta(seconds=cancelled_after_s) if cancelled_after_s is not None else None
    return Upload(id="u", file_name="f.csv", columns=["a"], queue="rows.upload.u", rows=rows,
                  confirmed=rows if published else 0, done=done, failed=failed, redelivered=0, created_at=START,
                  published_at=START if published else None, finished_at=finished,
                  paused_at=START if paused else None, cancelled_at=cancelled, file_sha256=None,
                  parameters={"delimiter": ","}, error=error, publishing=publishing and not published)


@pytest.mark.parametrize(
    ("kwargs", "state"),
    [
        ({"published": False}, "publishing"),
        ({"published": False, "done": 10}, "publishing"),  # workers may start before the last confirm
        ({"published": False, "publishing": False}, "interrupted"),  # its publisher is gone
        ({"published": False, "publishing": False, "error": "row 3 is too large"}, "failed"),
        ({"published": False, "publishing": False, "done": 100}, "done"),
        ({"done": 99}, "processing"),
        ({"done": 60, "failed": 40}, "done"),
        ({"failed": 100}, "done"),
        ({"paused": True}, "paused"),
        ({"paused": True, "published": False}, "paused"),  # publishing goes on, its rows wait
        ({"paused": True, "published": False, "publishing": False}, "paused"),
        ({"paused": True, "done": 100}, "done"),  # its last rows, in hand when it was paused
        ({"cancelled_after_s": 1}, "cancelled"),
        ({"cancelled_after_s": 1, "paused": True}, "cancelled"),
        ({"cancelled_after_s": 1, "published": False, "publishing": False, "error": "too large"}, "cancelled"),
        ({"cancelled_after_s": 1, "done": 100}, "cancelled"),  # cancelled wins over everything
    ],
)
def test_done_exactly_when_every_row_has_an_outcome_cancelled_and_paused_above_the_rest(kwargs: dict,
                                                                                       state: str) -> None:
    assert upload(**kwargs).state == state


@pytest.mark.parametrize(("kwargs", "cancelled"), [
    ({}, 0),
    ({"done": 30, "failed": 10, "paused": True}, 0),
    ({"done": 30, "failed": 10, "cancelled_after_s": 5}, 60),
    ({"done": 100, "cancelled_after_s": 5}, 0),
])
def test_a_cancelled_upload_s_rows_without_an_outcome_are_counted_as_cancelled(kwargs: dict, cancelled: int) -> None:
    status = status_of(upload(**kwargs), START + timedelta(seconds=20))
    assert status.cancelled == cancelled
    if "cancelled_after_s" in kwargs:
        assert status.cancelled + status.done + status.failed == status.rows


def test_the_pace_is_rows_finished_per_second_and_the_rest_at_that_pace() -> None:
    assert pace(upload(done=30, failed=10), START + timedelta(seconds=20)) == (2.0, 30.0)


def test_a_finished_upload_keeps_its_pace_and_has_nothing_left() -> None:
    assert pace(upload(done=100, finished_after_s=50), START + timedelta(hours=1)) == (2.0, 0.0)


def test_no_pace_before_the_first_row_finished() -> None:
    assert pace(upload(), START + timedelta(seconds=5)) == (None, None)


def test_a_paused_upload_has_a_pace_but_no_time_left() -> None:
    assert pace(upload(done=30, paused=True), START + timedelta(seconds=10)) == (3.0, None)


def test_a_cancelled_upload_s_pace_ends_when_it_was_cancelled() -> None:
    assert pace(upload(done=30, cancelled_after_s=10), START + timedelta(hours=1)) == (3.0, None)
