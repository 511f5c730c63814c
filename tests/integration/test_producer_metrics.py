"""The real producer's /metrics: its counters move by exactly what an upload did, and uploads in
progress show the ledger's counts."""

import httpx
import pytest

from kubejob import message
from tests.helpers import wait_for
from tests.helpers.broker import Broker
from tests.helpers.metrics import Scrape
from tests.helpers.producer import csv_file, producer
from tests.helpers.worker import start_worker

ROWS, TAKEN, POISON = 40, 5, frozenset({10, 20})


@pytest.fixture
def running_producer(queue_name: str):
    with producer(queue_name) as (url, _pid):
        yield url


def test_an_upload_moves_the_counters_by_its_rows(running_producer: str) -> None:
    url = running_producer
    before = Scrape(f"{url}/metrics")
    accepted = httpx.post(f"{url}/upload", files={"file": ("a.csv", csv_file(ROWS), "text/csv")}, timeout=60)
    assert accepted.status_code == 200, accepted.text
    refused = httpx.post(f"{url}/upload", files={"file": ("b.csv", b"id,id\n1,2\n", "text/csv")}, timeout=60)
    assert refused.status_code == 400
    after = Scrape(f"{url}/metrics")

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)
    assert moved("kubejob_producer_rows_published_total") == ROWS
    assert moved("kubejob_producer_uploads_total", code="200") == 1
    assert moved("kubejob_producer_uploads_total", code="400") == 1
    assert moved("kubejob_producer_upload_duration_seconds_count") == 1  # accepted uploads only
    assert moved("kubejob_producer_confirm_wait_seconds_count") >= 1
    assert after.value("kubejob_producer_uploads_in_progress") == 0
    assert after.value("kubejob_producer_ledger_up") == 1


def test_an_upload_in_progress_shows_the_ledger_s_counts_until_it_is_done(
    running_producer: str, broker: Broker, queue_name: str, tmp_path
) -> None:
    url = running_producer
    response = httpx.post(f"{url}/upload", files={"file": ("p.csv", csv_file(ROWS, POISON), "text/csv")}, timeout=60)
    assert response.status_code == 200, response.text
    upload = {"upload_id": response.json()["upload_id"], "queue": queue_name, "file_name": "p.csv"}
    published = Scrape(f"{url}/metrics")
    assert published.value("kubejob_upload_rows", **upload) == ROWS
    assert published.value("kubejob_upload_confirmed_rows", **upload) == ROWS
    assert published.value("kubejob_upload_done_rows", **upload) == 0

    # The first rows are taken off the queue unhandled, so the upload can never finish.
    with broker.connection() as conn:
        channel = conn.channel()
        for _ in range(TAKEN):
            assert channel.basic_get(queue_name, auto_ack=True)[0] is not None
    worker = start_worker(queue_name, tmp_path / "handled", "fail_poison", WORKER_MAX_ATTEMPTS="1")
    assert worker.wait(timeout=60) == 0
    drained = Scrape(f"{url}/metrics")
    assert drained.value("kubejob_upload_done_rows", **upload) == ROWS - TAKEN - len(POISON)
    assert drained.value("kubejob_upload_failed_rows", **upload) == len(POISON)
    broker.drain(message.dead_letter_queue(queue_name))

    # Its last rows handled, the upload is done and leaves the uploads in progress.
    rows = {"id": "x", "name": "late", "poison": "no"}
    with broker.connection() as conn:
        channel = conn.channel()
        for number in range(1, TAKEN + 1):
            body, properties = message.encode(rows, upload_id=upload["upload_id"], row_number=number, line=number + 1)
            channel.basic_publish("", queue_name, body, properties)
    assert start_worker(queue_name, tmp_path / "handled", "fail_poison").wait(timeout=60) == 0
    wait_for(lambda: upload not in Scrape(f"{url}/metrics").labelled("kubejob_upload_rows"),
             what="the finished upload to leave the metrics", timeout=10)
