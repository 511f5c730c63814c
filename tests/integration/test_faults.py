"""Faults with real processes: killed workers and a restarted broker lose nothing."""

import collections
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench import support
from kubejob.message import upload_queue
from tests.helpers import wait_for
from tests.helpers.broker import Broker, rows
from tests.helpers.producer import producer
from tests.helpers.worker import handled, start_worker


def test_workers_killed_at_random_lose_no_row(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record, count, prefetch = tmp_path / "handled", 3000, 20
    broker.publish_rows(queue_name, rows(count))
    env = {"SLOW_SECONDS": "0.002", "WORKER_PREFETCH": str(prefetch)}
    workers = [start_worker(queue_name, record, "slow", **env) for _ in range(3)]
    chance, kills = random.Random(20261128), 0
    while kills < 8 and sum(handled(record).values()) < count * 0.8:
        time.sleep(chance.uniform(0.2, 0.8))
        # The oldest worker has been consuming longest, so it holds a full prefetch.
        victim = workers.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills += 1
        workers.append(start_worker(queue_name, record, "slow", **env))
    for worker in workers:
        assert worker.wait(timeout=120) in (0, -signal.SIGKILL)
    counts = handled(record)
    twice = sum(n - 1 for n in counts.values())
    assert set(counts) == {str(i) for i in range(count)}
    assert kills >= 3
    assert twice <= kills * prefetch, "a kill can only return the rows that worker held"
    assert broker.backlog(queue_name) == 0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120, capture_output=True)


@pytest.fixture
def restartable_broker(broker: Broker):
    """The broker, with the guarantee that it runs again after the test."""
    yield broker
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")


def test_a_retry_with_the_idempotency_key_after_a_broker_restart_queues_each_row_once(
    restartable_broker: Broker, queue_name: str
) -> None:
    broker, total, window = restartable_broker, 100_000, 20_000
    big = support.sample_csv(total)
    headers = {"Idempotency-Key": f"restart-{queue_name}"}
    with producer(queue_name) as (url, _pid):
        outcome: dict[str, httpx.Response] = {}
        with open(big, "rb") as f:
            uploading = threading.Thread(target=lambda: outcome.update(
                response=httpx.post(f"{url}/upload", files={"file": f}, headers=headers, timeout=120)))
            uploading.start()
            # The restart must land mid-publish: the ledger shows rows of it confirmed, and its
            # answer has not come yet.
            started = wait_for(lambda: [u for u in httpx.get(f"{url}/uploads").json()["uploads"]
                                        if u["queue"] == upload_queue(queue_name, u["upload_id"]) and u["confirmed"]],
                               what="the upload to start publishing", timeout=60, interval=0.05)
            assert uploading.is_alive(), outcome
            rabbitmqctl("stop_app")
            uploading.join(timeout=120)
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        failed = outcome["response"]
        assert failed.status_code == 503, failed.text
        interrupted = failed.json()
        assert interrupted["upload_id"] == started[0]["upload_id"]
        assert 0 < interrupted["confirmed"] < total, interrupted
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="the producer ready again", timeout=30)
        with open(big, "rb") as f:
            retried = httpx.post(f"{url}/upload", files={"file": f}, headers=headers, timeout=120)
        assert retried.status_code == 200, retried.text
        assert retried.json()["upload_id"] == interrupted["upload_id"]
        status = httpx.get(f"{url}/uploads/{interrupted['upload_id']}").json()
        assert (status["state"], status["confirmed"], status["rows"]) == ("processing", total, total)
    queued = collections.Counter(props.headers["row"] for props, _ in broker.drain(status["queue"]))
    assert set(queued) == set(range(1, total + 1)), "a row is missing"
    assert all(queued[row] == 1 for row in range(1, interrupted["confirmed"] + 1)), "a confirmed row was sent again"
    # Rows the broker took but had not confirmed when it stopped are in doubt: sent again, at most a window's worth.
    assert sum(queued.values()) - total <= window
