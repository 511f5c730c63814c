"""Uploads interrupted at the worst moments, against a real producer, RabbitMQ and PostgreSQL.

Each test counts what a retry with the Idempotency-Key queues twice (at most PUBLISH_WINDOW),
how soon the retry is served, and what the status and the errors say meanwhile.
"""

import collections
import itertools
import os
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from bench import support
from kubejob.message import upload_queue
from producer.app import create_app
from producer.settings import Settings
from tests.helpers import wait_for
from tests.helpers.broker import Broker
from tests.helpers.producer import producer
from tests.helpers.rabbitmq_server import DockerRabbitmq
from tests.helpers.tcp_proxy import TcpProxy
from tests.helpers.worker import start_worker

ROWS, WINDOW = 100_000, 5_000
STATES = ("publishing", "processing", "done")  # the order an upload that is not interrupted goes through


@pytest.fixture(scope="module")
def big_csv() -> Path:
    return support.sample_csv(ROWS)


def post(url: str, path: Path, **headers: str) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(f"{url}/upload", files={"file": (path.name, f, "text/csv")}, headers=headers, timeout=120)


def upload_in_background(url: str, path: Path, **headers: str) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def send() -> None:
        try:
            outcome["response"] = post(url, path, **headers)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=send)
    thread.start()
    return thread, outcome


def publishing(url: str, queue: str, *, past: int) -> dict:
    """The upload to `queue`, once the ledger has it past `past` confirmed rows."""
    def found() -> dict | None:
        uploads = httpx.get(f"{url}/uploads", timeout=5).json()["uploads"]
        return next((u for u in uploads if u["queue"] == upload_queue(queue, u["upload_id"]) and u["confirmed"] > past),
                    None)

    return wait_for(found, what=f"the upload past {past} confirmed rows", timeout=60, interval=0.02)


def queued_rows(broker: Broker, queue: str) -> collections.Counter[int]:
    """How often each row is in the uploads' queues of `queue`."""
    return collections.Counter(properties.headers["row"] for name in broker.upload_queues(queue)
                               for properties, _ in broker.drain(name))


def test_postgresql_gone_mid_upload_queues_at_most_the_window_twice(broker: Broker, queue_name: str,
                                                                    ledger_database: str, big_csv: Path) -> None:
    proxy = TcpProxy(urlsplit(ledger_database).port or 5432)
    key = {"Idempotency-Key": f"pg-{queue_name}"}
    with producer(queue_name, DATABASE_URL=proxy.through(ledger_database), PUBLISH_WINDOW=str(WINDOW),
                  DATABASE_TIMEOUT_SECONDS="2") as (url, _pid):
        thread, outcome = upload_in_background(url, big_csv, **key)
        started = publishing(url, queue_name, past=20_000)
        proxy.cut("refuse")
        thread.join(timeout=120)
        interrupted = outcome["response"]
        assert interrupted.status_code == 503, interrupted.text
        body = interrupted.json()
        assert body["upload_id"] == started["upload_id"] and 20_000 < body["confirmed"] < ROWS, body
        assert "with the same Idempotency-Key" in body["error"]
        proxy.restore()
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="the producer ready", timeout=30)
        retried = post(url, big_csv, **key)
        assert retried.status_code == 200, retried.text
        assert retried.json()["upload_id"] == body["upload_id"]
    proxy.close()
    queued = queued_rows(broker, queue_name)
    assert set(queued) == set(range(1, ROWS + 1)), "a row is missing"
    assert all(queued[row] == 1 for row in range(1, started["confirmed"] + 1)), "a recorded row was sent again"
    assert sum(queued.values()) - ROWS <= WINDOW, f"{sum(queued.values()) - ROWS} rows queued twice"


def test_a_producer_killed_mid_upload_frees_it_at_once_and_a_retry_queues_at_most_the_window_twice(
        broker: Broker, queue_name: str, big_csv: Path) -> None:
    key = {"Idempotency-Key": f"kill-{queue_name}"}
    with producer(queue_name, PUBLISH_WINDOW=str(WINDOW)) as (url, pid):
        thread, outcome = upload_in_background(url, big_csv, **key)
        started = publishing(url, queue_name, past=20_000)
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=60)
        assert "error" in outcome, "the killed producer answered"
    with producer(queue_name, PUBLISH_WINDOW=str(WINDOW)) as (url, _pid):
        status = httpx.get(f"{url}/uploads/{started['upload_id']}").json()
        assert status["state"] == "interrupted", status
        began = time.monotonic()
        retried = post(url, big_csv, **key)
        assert retried.status_code == 200, retried.text  # not 409: no publisher holds it
        assert retried.json()["upload_id"] == started["upload_id"]
        took = time.monotonic() - began
    queued = queued_rows(broker, queue_name)
    assert set(queued) == set(range(1, ROWS + 1)), "a row is missing"
    assert sum(queued.values()) - ROWS <= WINDOW, f"{sum(queued.values()) - ROWS} rows queued twice"
    assert took < 30, f"the retry took {took:.1f} s"


def test_a_keyed_retry_with_another_delimiter_is_refused_naming_it(client: TestClient, broker: Broker,
                                                                   queue_name: str) -> None:
    data, key = b"id,name\n1,a\n2,b\n", {"Idempotency-Key": f"delimiter-{queue_name}"}
    first = client.post("/upload", files={"file": ("a.csv", data)}, headers=key)
    assert (first.status_code, first.json()["delimiter"]) == (200, ","), first.text
    other = client.post("/upload", files={"file": ("a.csv", data)}, data={"delimiter": "semicolon"}, headers=key)
    assert other.status_code == 409, other.text
    assert "delimiter ',' then, ';' now" in other.json()["error"]
    assert other.json()["upload_id"] == first.json()["upload_id"]
    same = client.post("/upload", files={"file": ("a.csv", data)}, data={"delimiter": "comma"}, headers=key)
    assert (same.status_code, same.json()["upload_id"]) == (200, first.json()["upload_id"])
    assert broker.backlog(queue_name) == 2


def test_an_unkeyed_503_says_how_to_retry_without_naming_a_key_it_never_had(queue_name: str) -> None:
    with TestClient(create_app(Settings(queue_name=queue_name, rabbitmq_port=1))) as client:
        refused = client.post("/upload", files={"file": ("a.csv", b"id\n1\n")})
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert "with the same Idempotency-Key" not in error
    assert "without an Idempotency-Key is a new upload" in error


def test_a_row_over_the_broker_s_limit_is_a_413_naming_it_and_the_upload_fails(
        rabbitmq_4: DockerRabbitmq, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in rabbitmq_4.environment().items():
        monkeypatch.setenv(name, value)
    limit = 16 * 1024**2  # RabbitMQ 4.0's max_message_size; MAX_MESSAGE_BYTES set above it by mistake
    data = b"id,text\n1,a\n2,b\n3," + b"x" * (limit + 10) + b"\n4,d\n"
    key = {"Idempotency-Key": f"large-{queue_name}"}
    settings = Settings(queue_name=queue_name, max_message_bytes=4 * limit, max_line_bytes=2 * limit,
                        max_record_bytes=2 * limit)
    with TestClient(create_app(settings)) as client:
        refused = client.post("/upload", files={"file": ("a.csv", data)}, headers=key)
        assert refused.status_code == 413, refused.text
        assert "row 3 " in refused.json()["error"] and f"max_message_size ({limit})" in refused.json()["error"]
        status = client.get(f"/uploads/{refused.json()['upload_id']}").json()
        assert status["state"] == "failed" and status["error"] == refused.json()["error"]
        again = client.post("/upload", files={"file": ("a.csv", data)}, headers=key)
        assert (again.status_code, again.json()["error"]) == (413, refused.json()["error"])
        assert client.get("/healthz").status_code == 200
    assert rabbitmq_4.backlog(queue_name) == 2, "the rows before it are queued, and nothing after it"


def test_status_during_an_upload_and_its_drain_never_contradicts_itself(queue_name: str, tmp_path: Path) -> None:
    path = support.sample_csv(30_000)
    seen: list[dict] = []
    with producer(queue_name, PUBLISH_WINDOW="2000") as (url, _pid):
        worker = start_worker(queue_name, tmp_path / "handled", WORKER_IDLE_SECONDS="5")
        thread, outcome = upload_in_background(url, path)
        upload_id = publishing(url, queue_name, past=0)["upload_id"]
        with httpx.Client(base_url=url) as http:
            while not seen or seen[-1]["state"] != "done":
                seen.append(http.get(f"/uploads/{upload_id}").json())
                time.sleep(0.005)
        thread.join(timeout=60)
        assert outcome["response"].status_code == 200
        assert worker.wait(timeout=60) == 0
    for status in seen:
        assert status["done"] + status["failed"] <= status["confirmed"] <= status["rows"], status
    for before, after in itertools.pairwise(seen):
        assert all(after[n] >= before[n] for n in ("confirmed", "done", "failed")), (before, after)
        assert STATES.index(after["state"]) >= STATES.index(before["state"]), (before, after)
    assert len(seen) > 50 and {s["state"] for s in seen} >= {"processing", "done"}


def test_postgresql_back_means_the_next_request_is_served_at_once(queue_name: str, ledger_database: str) -> None:
    proxy = TcpProxy(urlsplit(ledger_database).port or 5432)
    settings = Settings(queue_name=queue_name, database_url=proxy.through(ledger_database),
                        database_timeout_seconds=5)
    with TestClient(create_app(settings)) as client:
        upload_id = client.post("/upload", files={"file": ("a.csv", b"id\n1\n")}).json()["upload_id"]
        proxy.cut("refuse")
        down = client.get(f"/uploads/{upload_id}")
        assert down.status_code == 503
        assert "nothing published" not in down.json()["error"] and "try again shortly" in down.json()["error"]
        time.sleep(3)  # the pool's own attempts to reconnect fail meanwhile
        proxy.restore()
        began = time.monotonic()
        back = client.get(f"/uploads/{upload_id}")
        took = time.monotonic() - began
    proxy.close()
    assert back.status_code == 200, back.text
    assert took < 1.0, f"the first request after PostgreSQL returned took {took:.2f} s"
