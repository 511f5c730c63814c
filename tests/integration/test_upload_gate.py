"""The real producer refuses an upload from its headers alone: without the token, or past MAX_CONCURRENT_UPLOADS."""

import time

import httpx

from tests.helpers.producer import StreamedUpload, csv_file, producer

GIGABYTE = 1 << 30


def test_an_unauthenticated_1gb_upload_is_refused_within_a_second_having_read_almost_nothing(queue_name: str) -> None:
    with producer(queue_name, UPLOAD_TOKEN="s3cret") as (url, _):
        request = StreamedUpload(url, size=GIGABYTE)
        status, seconds = request.send_until_answered(timeout=10)
        request.close()
    assert status == "HTTP/1.1 401 Unauthorized"
    assert seconds < 1.0
    # What the kernel's socket buffers took before the answer came, nothing like the gigabyte.
    assert request.sent < 16 << 20, request.sent


def test_an_upload_past_the_limit_gets_429_at_once_with_retry_after(queue_name: str) -> None:
    with producer(queue_name, UPLOAD_TOKEN="s3cret", MAX_CONCURRENT_UPLOADS="1") as (url, _):
        first = StreamedUpload(url, size=GIGABYTE, token="s3cret")
        assert first.send_until_answered(timeout=0.5)[0] == "", "the first upload should still be streaming in"
        started = time.perf_counter()
        second = httpx.post(f"{url}/upload", files={"file": ("rows.csv", csv_file(3), "text/csv")},
                            headers={"Authorization": "Bearer s3cret"}, timeout=10)
        seconds = time.perf_counter() - started
        first.close()
    assert second.status_code == 429 and second.headers["retry-after"] == "5"
    assert "MAX_CONCURRENT_UPLOADS" in second.json()["error"]
    assert seconds < 0.5
