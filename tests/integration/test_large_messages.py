"""Messages far larger than a row, against a real worker and RabbitMQ: read in linear time, or dropped unheld."""

import collections
import os
import time
from pathlib import Path

import psycopg
import pytest

from kubejob import message
from tests.helpers.broker import Broker, rows
from tests.helpers.rss import PeakRss
from tests.helpers.worker import IN_HAND_BODIES, PREFETCHED_BODIES, RESIDENT_BYTES, handled, start_worker

MB = 1024**2


def run_worker(queue: str, record: Path, handler: str = "record", **env: str) -> tuple[int, int, float]:
    """A worker's exit code, peak RSS and seconds, draining `queue`."""
    started = time.monotonic()
    worker = start_worker(queue, record, handler, **env)
    rss = PeakRss(worker.pid)
    code = worker.wait(timeout=180)
    return code, rss.join(), time.monotonic() - started


def publish_big(broker: Broker, queue: str, *, upload_id: str, row: int, size: int) -> int:
    """One row of about `size` bytes published by hand into the upload's queue (the producer refuses such rows); its
    body's size."""
    body, properties = message.encode({"id": str(row), "blob": "x" * size}, upload_id=upload_id, row_number=row,
                                      line=row + 1)
    with broker.connection() as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish("", message.upload_queue(queue, upload_id), body, properties)
    return len(body)


@pytest.fixture
def baseline_rss(broker: Broker, tmp_path: Path) -> int:
    """A worker's peak RSS draining a few ordinary rows: what it takes without any large message."""
    queue = f"test-baseline-{os.getpid()}-{time.monotonic_ns()}"
    broker.publish_rows(queue, rows(20))
    try:
        code, peak, _ = run_worker(queue, tmp_path / "baseline")
    finally:
        broker.delete_queue(queue)
    assert code == 0
    return peak


def test_a_message_over_max_message_bytes_is_dead_lettered_without_being_held(
        broker: Broker, queue_name: str, tmp_path: Path, baseline_rss: int) -> None:
    record = tmp_path / "handled"
    upload_id = broker.publish_rows(queue_name, rows(10), more=1)
    size = publish_big(broker, queue_name, upload_id=upload_id, row=11, size=40 * MB)
    broker.publish_rows(queue_name, [{"id": str(n)} for n in range(12, 22)])

    code, peak, _ = run_worker(queue_name, record, MAX_MESSAGE_BYTES=str(MB))

    assert code == 0
    assert handled(record) == collections.Counter(str(n) for n in [*range(10), *range(12, 22)])
    assert peak - baseline_rss < 8 * MB, (peak, baseline_rss)  # the body is 40 MB
    error = (f"MessageTooLarge: the message body is {size} bytes, more than MAX_MESSAGE_BYTES ({MB}) that a worker "
             "holds in memory")
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        outcome = conn.execute("SELECT failed, attempts, error FROM row_outcomes WHERE upload_id = %s AND "
                               "row_number = 11", (upload_id,)).fetchone()
    assert outcome == (True, 1, error)
    ((properties, body),) = broker.drain(message.dead_letter_queue(queue_name))
    assert body == b"" and properties.message_id == f"{upload_id}:11"
    assert properties.headers["error"] == error and properties.headers["body_bytes"] == size
    assert properties.headers["upload_id"] == upload_id and properties.headers["row"] == 11
    assert broker.backlog(queue_name) == 0 and broker.depth(message.retry_queue(queue_name)) == 0


def test_a_large_message_under_the_limit_is_handled_in_about_three_times_its_size(
        broker: Broker, queue_name: str, tmp_path: Path, baseline_rss: int) -> None:
    record = tmp_path / "handled"
    upload_id = broker.publish_rows(queue_name, rows(5), more=1)
    size = publish_big(broker, queue_name, upload_id=upload_id, row=6, size=30 * MB)

    code, peak, seconds = run_worker(queue_name, record, MAX_MESSAGE_BYTES=str(64 * MB))

    assert code == 0
    assert handled(record) == collections.Counter([*(str(n) for n in range(5)), "6"])
    # Reading holds it twice (the receives joined, then its body: tests/unit/test_deliveries_bytes.py) and the
    # handler's row once more; glibc's heap keeps about one more copy's worth (measured 4.0 times its size, and
    # 3.0 with MALLOC_MMAP_THRESHOLD_=131072). Joined again at every receive it took 4.2 times and minutes.
    assert peak - baseline_rss <= IN_HAND_BODIES * size, (peak, baseline_rss, size)
    assert seconds < 30, seconds  # read again at every receive, it took minutes
    assert broker.drain(message.dead_letter_queue(queue_name)) == []


def test_a_full_prefetch_of_the_largest_bodies_costs_what_the_worker_job_is_sized_for(
        broker: Broker, queue_name: str, tmp_path: Path, baseline_rss: int) -> None:
    record = tmp_path / "handled"
    messages = 60  # fewer than WORKER_PREFETCH, so that all are held while the slow handler takes the first
    upload_id = broker.publish_rows(queue_name, rows(1), more=messages)
    body = max(publish_big(broker, queue_name, upload_id=upload_id, row=row, size=MB - 100)
               for row in range(2, messages + 2))
    assert body <= MB  # MAX_MESSAGE_BYTES's default

    code, peak, _ = run_worker(queue_name, record, "slow", SLOW_SECONDS="0.1")

    assert code == 0
    assert len(handled(record)) == messages + 1
    assert baseline_rss <= RESIDENT_BYTES, baseline_rss
    assert peak - baseline_rss <= body * (PREFETCHED_BODIES * messages + IN_HAND_BODIES), (peak, baseline_rss)
