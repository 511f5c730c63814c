"""An upload's state and pace, as GET /uploads/{id} reports them."""

from datetime import UTC, datetime, timedelta

import pytest

from producer.ledger import Upload
from producer.status import pace

START = datetime(2026, 1, 1, tzinfo=UTC)


def upload(*, rows: int = 100, done: int = 0, failed: int = 0, published: bool = True, publishing: bool = True,
           error: str | None = None, finished_after_s: float | None = None) -> Upload:
    finished = START + timedelta(seconds=finished_after_s) if finished_after_s is not None else None
    return Upload(id="u", file_name="f.csv", columns=["a"], queue="rows", rows=rows, confirmed=rows if published else 0,
                  done=done, failed=failed, redelivered=0, created_at=START,
                  published_at=START if published else None, finished_at=finished, file_sha256=None,
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
    ],
)
def test_done_exactly_when_every_row_has_an_outcome(kwargs: dict, state: str) -> None:
    assert upload(**kwargs).state == state


def test_the_pace_is_rows_finished_per_second_and_the_rest_at_that_pace() -> None:
    assert pace(upload(done=30, failed=10), START + timedelta(seconds=20)) == (2.0, 30.0)


def test_a_finished_upload_keeps_its_pace_and_has_nothing_left() -> None:
    assert pace(upload(done=100, finished_after_s=50), START + timedelta(hours=1)) == (2.0, 0.0)


def test_no_pace_before_the_first_row_finished() -> None:
    assert pace(upload(), START + timedelta(seconds=5)) == (None, None)
