"""Rows that raise, crash, get killed or hang, against real worker processes, RabbitMQ and PostgreSQL.

Each ends in the dead-letter queue after WORKER_MAX_ATTEMPTS, with its error, recorded as
failed in the ledger, while every other row is handled; workers are restarted as a Job's
restart policy would, and the rows handled twice are counted. Each test runs on the local
RabbitMQ (3.10) and on RabbitMQ 4.0, whose quorum queues default to a delivery limit of 20.
"""

import collections
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubejob import message
from tests.helpers import REPO_ROOT
from tests.helpers.broker import Broker
from tests.helpers.producer import csv_file
from tests.helpers.worker import handled, start_worker

ROWS, POISON, PREFETCH, MAX_ATTEMPTS = 300, 100, 20, 3


@pytest.fixture
def broker(each_broker: Broker) -> Broker:
    """Every test here runs on the local RabbitMQ (3.10) and on 4.0, whose quorum queues count deliveries anew."""
    return each_broker


def run_as_a_job(queue: str, record: Path, handler: str, **env: str) -> list[int]:
    """Start workers one after another until one exits 0, as a Job restarts its pod; return their exit codes."""
    codes: list[int] = []
    while not codes or codes[-1] != 0:
        assert len(codes) <= MAX_ATTEMPTS + 1, f"workers keep failing: {codes}"
        settings = {"WORKER_PREFETCH": str(PREFETCH), "WORKER_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
                    "WORKER_RETRY_DELAY_SECONDS": "0.2"} | env
        worker = start_worker(queue, record, handler, **settings)
        codes.append(worker.wait(timeout=120))
    return codes


@pytest.mark.parametrize(("handler", "env", "exit_code", "error"), [
    ("fail_poison", {}, None, f"RuntimeError: poison row {POISON}"),
    ("exit_on_poison", {}, 1, "GaveUp: the worker died while handling it 3 times"),
    ("kill_on_poison", {}, -9, "GaveUp: the worker died while handling it 3 times"),
    ("hang_on_poison", {"WORKER_ROW_TIMEOUT_SECONDS": "1"}, 4, "RowTimedOut: the handler ran longer than"),
    # Rows handled side by side: the same bounds hold (WORKER_PREFETCH stays above twice the concurrency).
    ("fail_poison", {"WORKER_CONCURRENCY": "8"}, None, f"RuntimeError: poison row {POISON}"),
    ("kill_on_poison", {"WORKER_CONCURRENCY": "8"}, -9, "GaveUp: the worker died while handling it 3 times"),
    ("hang_on_poison", {"WORKER_ROW_TIMEOUT_SECONDS": "1", "WORKER_CONCURRENCY": "8"}, 4,
     "RowTimedOut: the handler ran longer than"),
])
def test_a_poison_row_is_dead_lettered_after_max_attempts_and_the_rest_are_handled(
        handler: str, env: dict[str, str], exit_code: int | None, error: str,
        client: TestClient, broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record = tmp_path / "handled"
    upload = client.post("/upload", files={"file": ("rows.csv", csv_file(ROWS, frozenset({POISON})), "text/csv")})
    upload_id = upload.json()["upload_id"]

    codes = run_as_a_job(queue_name, record, handler, **env)

    crashes = codes[:-1]
    assert crashes == ([] if exit_code is None else [exit_code] * MAX_ATTEMPTS)
    counts = handled(record)
    assert counts[f"!{POISON}"] == MAX_ATTEMPTS
    others = collections.Counter({row: n for row, n in counts.items() if not row.startswith("!")})
    assert set(others) == {str(i) for i in range(1, ROWS + 1) if i != POISON}
    handled_twice = sum(others.values()) - len(others)
    # Only rows handled but not yet recorded when a worker died come back; at most a prefetch each time.
    assert handled_twice <= PREFETCH * len(crashes), (handled_twice, codes)

    dead = broker.drain(message.dead_letter_queue(queue_name))
    assert len(dead) == 1
    properties, body = dead[0]
    assert properties.message_id == f"{upload_id}:{POISON}" and b'"poison":"yes"' in body
    assert properties.headers["error"].startswith(error), properties.headers
    status = client.get(f"/uploads/{upload_id}").json()
    assert (status["state"], status["done"], status["failed"]) == ("done", ROWS - 1, 1)
    failed_rows = client.get(status["failed_url"]).text
    assert error.split(":")[0] in failed_rows
    assert broker.backlog(queue_name) == 0 and broker.depth(message.retry_queue(queue_name)) == 0


def test_a_row_failing_twice_is_handled_on_its_third_attempt_after_the_delays(
        broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record, times = tmp_path / "handled", tmp_path / "times"
    broker.publish_rows(queue_name, [{"id": str(i), "poison": "yes" if i == 3 else "no"} for i in range(40)])
    codes = run_as_a_job(queue_name, record, "fail_poison_twice", TIMES_FILE=str(times),
                         WORKER_RETRY_DELAY_SECONDS="0.5", WORKER_RETRY_MAX_DELAY_SECONDS="0.8")
    assert codes == [0]
    calls = [line.split() for line in times.read_text().splitlines()]
    attempts = [float(at) for row, at in calls if row == "3"]
    assert len(attempts) == 3 and handled(record)["3"] == 1
    delays = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert 0.5 <= delays[0] < 1.0 and 0.8 <= delays[1] < 1.3, delays
    # The rows behind it did not wait for its retries.
    assert max(float(at) for row, at in calls if row != "3") < attempts[1]
    assert broker.drain(message.dead_letter_queue(queue_name)) == []


def test_a_row_the_broker_dead_letters_at_its_delivery_limit_is_recorded_as_failed(
        client: TestClient, broker: Broker, queue_name: str, tmp_path: Path) -> None:
    answer = client.post("/upload", files={"file": ("rows.csv", csv_file(5), "text/csv")}).json()
    upload_id = answer["upload_id"]
    # Consumers that die holding the first row, one more time than the queue's delivery limit allows.
    for _ in range(message.DELIVERY_LIMIT + 1):
        with broker.connection() as conn:
            method, _, _ = conn.channel().basic_get(answer["queue"])
            assert method.delivery_tag
    assert broker.depth(message.limit_queue(queue_name)) == 1
    assert start_worker(queue_name, tmp_path / "handled").wait(timeout=60) == 0
    assert set(handled(tmp_path / "handled")) == {"2", "3", "4", "5"}
    status = client.get(f"/uploads/{upload_id}").json()
    assert (status["state"], status["done"], status["failed"]) == ("done", 4, 1)
    ((properties, _),) = broker.drain(message.dead_letter_queue(queue_name))
    assert properties.message_id == f"{upload_id}:1"
    assert properties.headers["error"].startswith("RabbitMQ dead-lettered it (delivery_limit)")
    assert broker.depth(message.limit_queue(queue_name)) == 0


def test_a_retry_queue_from_before_stops_the_worker_with_exit_2_saying_how_to_upgrade(
        broker: Broker, queue_name: str) -> None:
    retry = message.retry_queue(queue_name)
    with broker.connection() as conn:  # as versions with one queue for every upload declared it
        conn.channel().queue_declare(retry, durable=True, arguments={"x-dead-letter-exchange": "",
                                                                     "x-dead-letter-routing-key": queue_name})
    result = subprocess.run([sys.executable, "-m", "worker"], cwd=REPO_ROOT,
                            env=os.environ | {"QUEUE_NAME": queue_name}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert "x-dead-letter-routing-key" in line["error"] and f"delete_queue {retry}" in line["error"], line
