"""The real producer's /metrics, on a port of its own: its counters move by exactly what an upload did, and
uploads in progress show the ledger's counts, with no file name."""

import httpx
import pytest

from kubejob import message
from tests.helpers import free_port, wait_for
from tests.helpers.broker import Broker
from tests.helpers.metrics import Scrape
from tests.helpers.producer import csv_file, producer
from tests.helpers.worker import start_worker

ROWS, TAKEN, POISON = 40, 5, frozenset({10, 20})


@pytest.fixture
def running_producer(queue_name: str):
    """(the API's base URL, the URL of its /metrics)"""
    metrics_port = free_port()
    with producer(queue_name, PRODUCER_METRICS_PORT=str(metrics_port)) as (url, _pid):
        yield url, f"http://127.0.0.1:{metrics_port}/metrics"


def test_the_metrics_are_served_on_their_port_only(running_producer: tuple[str, str]) -> None:
    url, metrics_url = running_producer
    assert httpx.get(metrics_url, timeout=5).status_code == 200
    assert httpx.get(f"{url}/metrics", timeout=5).status_code == 404
    assert httpx.get(metrics_url.replace("/metrics", "/uploads"), timeout=5).status_code == 404


def test_an_upload_moves_the_counters_by_its_rows(running_producer: tuple[str, str]) -> None:
    url, metrics_url = running_producer
    before = Scrape(metrics_url)
    accepted = httpx.post(f"{url}/upload", files={"file": ("a.csv", csv_file(ROWS), "text/csv")}, timeout=60)
    assert accepted.status_code == 200, accepted.text
    refused = httpx.post(f"{url}/upload", files={"file": ("b.csv", b"id,id\n1,2\n", "text/csv")}, timeout=60)
    assert refused.status_code == 400
    after = Scrape(metrics_url)

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
    running_producer: tuple[str, str], broker: Broker, queue_name: str, tmp_path
) -> None:
    url, metrics_url = running_producer
    response = httpx.post(f"{url}/upload", files={"file": ("secret-orders.csv", csv_file(ROWS, POISON), "text/csv")},
                          timeout=60)
    assert response.status_code == 200, response.text
    own_queue = response.json()["queue"]
    upload = {"upload_id": response.json()["upload_id"], "queue": own_queue}
    published = Scrape(metrics_url)
    assert "secret-orders" not in published.text  # and `upload` is the whole label set of each series below
    assert published.value("kubejob_upload_rows", **upload) == ROWS
    assert published.value("kubejob_upload_confirmed_rows", **upload) == ROWS
    assert published.value("kubejob_upload_done_rows", **upload) == 0

    # The first rows are taken off the queue unhandled, so the upload can never finish.
    with broker.connection() as conn:
        channel = conn.channel()
        for _ in range(TAKEN):
            assert channel.basic_get(own_queue, auto_ack=True)[0] is not None
    worker = start_worker(queue_name, tmp_path / "handled", "fail_poison", WORKER_MAX_ATTEMPTS="1")
    assert worker.wait(timeout=60) == 0
    drained = Scrape(metrics_url)
    assert drained.value("kubejob_upload_done_rows", **upload) == ROWS - TAKEN - len(POISON)
    assert drained.value("kubejob_upload_failed_rows", **upload) == len(POISON)
    broker.drain(message.dead_letter_queue(queue_name))

    # Its last rows handled, the upload is done and leaves the uploads in progress.
    rows = {"id": "x", "name": "late", "poison": "no"}
    with broker.connection() as conn:
        channel = conn.channel()
        for number in range(1, TAKEN + 1):
            body, properties = message.encode(rows, upload_id=upload["upload_id"], row_number=number, line=number + 1)
            channel.basic_publish("", own_queue, body, properties)
    assert start_worker(queue_name, tmp_path / "handled", "fail_poison").wait(timeout=60) == 0
    wait_for(lambda: upload not in Scrape(metrics_url).labelled("kubejob_upload_rows"),
             what="the finished upload to leave the metrics", timeout=10)


def test_a_paused_upload_says_so_and_a_cancelled_one_leaves_the_uploads_in_progress(
        running_producer: tuple[str, str]) -> None:
    url, metrics_url = running_producer
    response = httpx.post(f"{url}/upload", files={"file": ("a.csv", csv_file(ROWS), "text/csv")}, timeout=60)
    assert response.status_code == 200, response.text
    upload = {"upload_id": response.json()["upload_id"], "queue": response.json()["queue"]}
    assert Scrape(metrics_url).value("kubejob_upload_paused", **upload) == 0
    assert httpx.post(f"{url}/uploads/{upload['upload_id']}/pause", timeout=10).status_code == 200
    paused = Scrape(metrics_url)
    assert (paused.value("kubejob_upload_paused", **upload), paused.value("kubejob_upload_rows", **upload)) == (1, ROWS)
    assert httpx.delete(f"{url}/uploads/{upload['upload_id']}", timeout=10).status_code == 200
    assert upload not in Scrape(metrics_url).labelled("kubejob_upload_rows"), "it will never finish"
