"""Real `python -m worker` processes against a real RabbitMQ: acks, retries, kills."""

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from kubejob import message
from tests.helpers import REPO_ROOT, free_port, wait_for
from tests.helpers.broker import Broker, rows
from tests.helpers.metrics import Scrape
from tests.helpers.worker import handled, start_worker


@pytest.fixture(autouse=True, params=["fast", "plain"])
def pika_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs its workers on kubejob.pika_fast's paths, then on pika's public calls (KUBEJOB_PIKA_FAST=0)."""
    monkeypatch.setenv("KUBEJOB_PIKA_FAST", "1" if request.param == "fast" else "0")
    return request.param


def test_worker_drains_the_queue_and_exits_0(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    broker.publish_rows(queue_name, rows(500))
    worker = start_worker(queue_name, tmp_path / "handled")
    assert worker.wait(timeout=60) == 0
    assert handled(tmp_path / "handled") == collections.Counter(str(i) for i in range(500))
    assert broker.backlog(queue_name) == 0


def test_a_drain_with_half_its_rows_failing_puts_each_failure_in_dead_once_and_every_outcome_in_the_ledger(
        broker: Broker, queue_name: str, tmp_path: Path) -> None:
    count = 20_000
    upload_id = broker.publish_rows(queue_name, [{"id": str(n), "poison": "yes" if n % 2 else "no"}
                                                 for n in range(count)], confirm=False)
    wait_for(lambda: broker.backlog(queue_name) == count, what=f"{count} rows queued", timeout=60, interval=0.2)
    worker = start_worker(queue_name, tmp_path / "handled", "fail_poison", WORKER_MAX_ATTEMPTS="1")
    assert worker.wait(timeout=180) == 0
    dead = broker.drain(message.dead_letter_queue(queue_name))
    rows_dead = collections.Counter(properties.headers["row"] for properties, _ in dead)
    assert rows_dead == collections.Counter(range(2, count + 1, 2))  # row n carries id n - 1: the odd ids
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        outcomes = conn.execute("SELECT failed, count(*) FROM row_outcomes WHERE upload_id = %s GROUP BY failed",
                                (upload_id,)).fetchall()
    assert sorted(outcomes) == [(False, count // 2), (True, count // 2)]
    assert broker.backlog(queue_name) == 0 and broker.depth(message.retry_queue(queue_name)) == 0


def test_a_killed_workers_rows_are_handled_by_the_next(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record = tmp_path / "handled"
    broker.publish_rows(queue_name, rows(200))
    first = start_worker(queue_name, record, "slow", SLOW_SECONDS="0.02", WORKER_PREFETCH="20")
    wait_for(lambda: sum(handled(record).values()) >= 30, what="30 rows handled", timeout=30, interval=0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert broker.backlog(queue_name) > 0
    second = start_worker(queue_name, record)
    assert second.wait(timeout=60) == 0
    assert set(handled(record)) == {str(i) for i in range(200)}
    assert broker.backlog(queue_name) == 0


def test_a_failing_row_is_dead_lettered_after_max_attempts(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record = tmp_path / "handled"
    poisoned = [{"id": str(i), "poison": "yes" if i == 5 else "no"} for i in range(20)]
    upload_id = broker.publish_rows(queue_name, poisoned)
    worker = start_worker(queue_name, record, "fail_poison", WORKER_MAX_ATTEMPTS="4")
    assert worker.wait(timeout=60) == 0
    counts = handled(record)
    assert counts["!5"] == 4
    assert {key for key in counts if not key.startswith("!")} == {str(i) for i in range(20) if i != 5}
    dead = broker.drain(message.dead_letter_queue(queue_name))
    assert len(dead) == 1
    properties, body = dead[0]
    assert body == b'{"id":"5","poison":"yes"}'
    assert properties.headers["attempt"] == 4 and properties.message_id == f"{upload_id}:6"
    assert broker.backlog(queue_name) == 0


def test_sigterm_finishes_the_row_in_hand_and_returns_the_rest(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record, started = tmp_path / "handled", tmp_path / "started"
    broker.publish_rows(queue_name, rows(10))
    worker = start_worker(queue_name, record, "announced_slow", SLOW_SECONDS="2", WORKER_PREFETCH="5",
                          STARTED_FILE=str(started))
    wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, what="the second row in hand",
             interval=0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert sum(handled(record).values()) == 2, "the first row, and the one in hand when SIGTERM came"
    assert broker.backlog(queue_name) == 8


def test_a_long_handler_keeps_its_connection(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record = tmp_path / "handled"
    broker.publish_rows(queue_name, [{"id": "1"}])
    # With a 1 s heartbeat the broker drops a client that is silent for a few seconds.
    worker = start_worker(queue_name, record, "slow", SLOW_SECONDS="6", WORKER_HEARTBEAT_SECONDS="1")
    assert worker.wait(timeout=30) == 0
    assert handled(record) == collections.Counter({"1": 1})
    assert broker.backlog(queue_name) == 0


def test_an_unreachable_broker_is_one_line_that_says_why(queue_name: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    environment = os.environ | {"QUEUE_NAME": queue_name, "RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_PORT": str(port),
                                "WORKER_METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", "worker"], cwd=REPO_ROOT, env=environment, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["message"] == "broker connection failed"
    assert f"127.0.0.1:{port}" in line["error"] and "Connection refused" in line["error"], line


def test_the_metrics_count_each_outcome_exactly(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    total, poison, attempts = 60, {7, 19, 40}, 3
    broker.publish_rows(queue_name, [{"id": str(i), "poison": "yes" if i in poison else "no"} for i in range(total)])
    port = free_port()
    # Idle long enough to be scraped after the drain, then stopped by the test.
    worker = start_worker(queue_name, tmp_path / "handled", "fail_poison", WORKER_MAX_ATTEMPTS=str(attempts),
                          WORKER_METRICS_PORT=str(port), WORKER_IDLE_SECONDS="60")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        def settled() -> Scrape | None:
            try:
                scrape = Scrape(url)
            except httpx.HTTPError:
                return None  # not listening yet
            rows_total = [scrape.value("kubejob_worker_rows_total", outcome=o) for o in ("done", "dead_lettered")]
            return scrape if sum(rows_total) == total else None
        scrape = wait_for(settled, what=f"{total} rows settled on /metrics", timeout=60, interval=0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    k = len(poison)
    assert scrape.value("kubejob_worker_rows_total", outcome="done") == total - k
    assert scrape.value("kubejob_worker_rows_total", outcome="dead_lettered") == k
    assert scrape.value("kubejob_worker_rows_total", outcome="retried") == k * (attempts - 1)
    assert scrape.value("kubejob_worker_rows_total", outcome="already_done") == 0
    # Every attempt ran the handler once: the good rows once, the poison ones `attempts` times.
    assert scrape.value("kubejob_worker_handler_duration_seconds_count") == total - k + k * attempts
    assert scrape.value("kubejob_worker_redeliveries_total") == 0


@pytest.mark.parametrize("handler", ["overlapping", "overlapping_async"])
def test_rows_are_handled_worker_concurrency_at_a_time_each_once(
        handler: str, broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record, peaks = tmp_path / "handled", tmp_path / "peaks"
    broker.publish_rows(queue_name, rows(300))
    worker = start_worker(queue_name, record, handler, SLOW_SECONDS="0.05", PEAK_FILE=str(peaks),
                          WORKER_CONCURRENCY="8", WORKER_PREFETCH="4")
    assert worker.wait(timeout=60) == 0
    assert handled(record) == collections.Counter(str(i) for i in range(300))
    # The prefetch was raised to keep 8 busy; none of the rows came back unacked.
    assert max(int(n) for n in peaks.read_text().split()) == 8
    assert broker.backlog(queue_name) == 0


def test_sigterm_lets_the_rows_in_hand_finish_at_any_concurrency(broker: Broker, queue_name: str,
                                                                  tmp_path: Path) -> None:
    record, peaks = tmp_path / "handled", tmp_path / "peaks"
    broker.publish_rows(queue_name, rows(10))
    worker = start_worker(queue_name, record, "overlapping", SLOW_SECONDS="2", PEAK_FILE=str(peaks),
                          WORKER_CONCURRENCY="4", WORKER_PREFETCH="1")
    # It holds twice its concurrency (and the first row, taken before it widened its prefetch to that).
    wait_for(lambda: broker.backlog(queue_name) <= 2, what="the worker to take its rows", timeout=30, interval=0.1)
    time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert sum(handled(record).values()) == 4
    assert broker.backlog(queue_name) == 6
