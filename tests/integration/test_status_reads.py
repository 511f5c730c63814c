"""GET /uploads/{id} against real RabbitMQ and PostgreSQL: many pollers of one upload cost one ledger read per interval,
and what changed shows within it."""

import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from kubejob.message import upload_queue
from producer.ledger import Upload
from producer.status import STATUS_SECONDS
from tests.helpers import wait_for
from tests.helpers.producer import csv_file
from worker.ledger import Ledger, RowOutcome


def upload(client: TestClient, rows: int) -> str:
    response = client.post("/upload", files={"file": ("rows.csv", csv_file(rows), "text/csv")})
    assert response.status_code == 200, response.text
    return response.json()["upload_id"]


def counted_reads(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids the producer reads from the ledger, from now on."""
    ledger, reads = client.app.state.ledger, []
    get = ledger.get

    async def counted(upload_id: str) -> Upload | None:
        reads.append(upload_id)
        return await get(upload_id)

    monkeypatch.setattr(ledger, "get", counted)
    return reads


def test_200_polls_of_one_upload_by_20_clients_cost_one_ledger_read_per_interval(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    upload_id = upload(client, 10)
    reads = counted_reads(client, monkeypatch)
    began = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: client.get(f"/uploads/{upload_id}"), range(200)))
    took = time.monotonic() - began
    assert {answer.status_code for answer in answers} == {200}
    assert len(reads) <= took // STATUS_SECONDS + 1, f"{len(reads)} reads in {took:.2f} s"
    listed = next(u for u in client.get("/uploads").json()["uploads"] if u["upload_id"] == upload_id)
    assert answers[-1].json() == listed, "the status by id is the list's, field for field"
    assert client.get("/uploads/no-such-upload").status_code == 404


def test_a_row_recorded_by_a_worker_shows_once_the_interval_has_passed(client: TestClient,
                                                                       ledger_database: str) -> None:
    upload_id = upload(client, 10)
    assert client.get(f"/uploads/{upload_id}").json()["done"] == 0
    worker_ledger = Ledger(ledger_database, timeout_s=5)
    worker_ledger.open()
    try:
        worker_ledger.record([RowOutcome(upload_id, row=1, attempts=1)], redelivered=collections.Counter())
    finally:
        worker_ledger.close()
    time.sleep(STATUS_SECONDS)
    status = client.get(f"/uploads/{upload_id}").json()
    assert (status["done"], status["confirmed"], status["rows"]) == (1, 10, 10)


def test_the_status_read_after_an_upload_s_answer_says_what_the_answer_said(client: TestClient,
                                                                            queue_name: str) -> None:
    rows, answer = 20_000, {}
    uploading = threading.Thread(target=lambda: answer.update(upload_id=upload(client, rows)))
    uploading.start()
    upload_id = wait_for(lambda: next((u["upload_id"] for u in client.get("/uploads").json()["uploads"]
                                       if u["queue"] == upload_queue(queue_name, u["upload_id"])), None),
                         what="the upload in the list", timeout=30, interval=0.01)
    states = []
    while uploading.is_alive():  # keeps a fresh answer in the cache until the upload's own answer
        states.append(client.get(f"/uploads/{upload_id}").json()["state"])
    uploading.join()
    assert answer["upload_id"] == upload_id and "publishing" in states
    status = client.get(f"/uploads/{upload_id}").json()
    assert (status["state"], status["confirmed"]) == ("processing", rows)
