"""Real `python -m worker` processes against a real RabbitMQ: acks, retries, kills."""

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubejob import message
from tests.helpers import REPO_ROOT, free_port, wait_for
from tests.helpers.broker import Broker, rows
from tests.helpers.worker import handled, start_worker


def test_worker_drains_the_queue_and_exits_0(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    broker.publish_rows(queue_name, rows(500))
    worker = start_worker(queue_name, tmp_path / "handled")
    assert worker.wait(timeout=60) == 0
    assert handled(tmp_path / "handled") == collections.Counter(str(i) for i in range(500))
    assert broker.depth(queue_name) == 0


def test_a_killed_workers_rows_are_handled_by_the_next(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record = tmp_path / "handled"
    broker.publish_rows(queue_name, rows(200))
    first = start_worker(queue_name, record, "slow", SLOW_SECONDS="0.02", WORKER_PREFETCH="20")
    wait_for(lambda: sum(handled(record).values()) >= 30, what="30 rows handled", timeout=30, interval=0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert broker.depth(queue_name) > 0
    second = start_worker(queue_name, record)
    assert second.wait(timeout=60) == 0
    assert set(handled(record)) == {str(i) for i in range(200)}
    assert broker.depth(queue_name) == 0


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
    assert broker.depth(queue_name) == 0


def test_sigterm_finishes_the_row_in_hand_and_returns_the_rest(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record = tmp_path / "handled"
    broker.publish_rows(queue_name, rows(10))
    worker = start_worker(queue_name, record, "slow", SLOW_SECONDS="2", WORKER_PREFETCH="5")
    time.sleep(3)  # the first row is done, the second is in hand
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    done = handled(record)
    assert 1 <= sum(done.values()) <= 3
    assert broker.depth(queue_name) == 10 - sum(done.values())


def test_a_long_handler_keeps_its_connection(broker: Broker, queue_name: str, tmp_path: Path) -> None:
    record = tmp_path / "handled"
    broker.publish_rows(queue_name, [{"id": "1"}])
    # With a 1 s heartbeat the broker drops a client that is silent for a few seconds.
    worker = start_worker(queue_name, record, "slow", SLOW_SECONDS="6", WORKER_HEARTBEAT_SECONDS="1")
    assert worker.wait(timeout=30) == 0
    assert handled(record) == collections.Counter({"1": 1})
    assert broker.depth(queue_name) == 0


def test_an_unreachable_broker_is_one_line_that_says_why(queue_name: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    environment = os.environ | {"QUEUE_NAME": queue_name, "RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_PORT": str(port)}
    result = subprocess.run([sys.executable, "-m", "worker"], cwd=REPO_ROOT, env=environment, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["message"] == "broker connection failed"
    assert f"127.0.0.1:{port}" in line["error"] and "Connection refused" in line["error"], line
