"""Scaler poll: how long the scaler's reading of the backlog takes with many uploads open.

Each upload has a queue of its own, so one reading is the ledger's open uploads, a passive
declare of every served upload's queue, and, while they have consumers, one management API
listing per 500 queues. Here UPLOADS uploads are open in the ledger, each with a quorum queue
of ROWS_EACH rows; a tenth of them are paused (left out, their queues not read), and one
consumer holds a row of each served queue, so the unacked counts are asked too. Each figure is
the median and p95 of READS readings, in seconds, as `python -m scaler` builds its reader; the
`..._ledger_s`, `..._live_s` and `..._management_s` figures are each source's share.

The broker is a RabbitMQ 4.0 of the bench's own (the version infra/k8s runs): the local 3.10 stopped
taking new AMQP connections for minutes with 1,000 quorum queues declared on this machine.
"""

import contextlib
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from kubejob import ledger, message
from scaler.backlog import Backlog
from scaler.queue_depth import ManagementClient
from scaler.queue_live import LiveQueues
from scaler.uploads import OpenUploads
from tests.helpers.backlog import parameters
from tests.helpers.broker import Broker
from tests.helpers.ledger import fresh_database
from tests.helpers.rabbitmq_server import DockerRabbitmq

UPLOADS, ROWS_EACH, PAUSED_EVERY, READS = 1000, 5, 10, 20
QUEUE = "bench-poll"
TIMEOUT_S = 30.0  # generous: the figure is the time taken, not whether it fits the shipped 5 s


def _fill(broker: Broker, url: str, uploads: int) -> list[str]:
    """Open `uploads` uploads in the ledger, each with its queue of ROWS_EACH rows; return their ids."""
    ids = [uuid.uuid4().hex for _ in range(uploads)]
    with broker.connection() as conn:
        channel = conn.channel()
        for upload_id in ids:
            queue = Broker.declare_upload(channel, QUEUE, upload_id)
            for row in range(1, ROWS_EACH + 1):
                body, properties = message.encode({"id": str(row)}, upload_id=upload_id, row_number=row, line=row + 1)
                channel.basic_publish("", queue, body, properties)
    ledger.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            """INSERT INTO uploads (id, file_name, columns, queue, rows, confirmed, published_at, paused_at)
               VALUES (%s, 'bench', '{id}', %s, %s, %s, now(), CASE WHEN %s THEN now() END)""",
            [(upload_id, message.upload_queue(QUEUE, upload_id), ROWS_EACH, ROWS_EACH, n % PAUSED_EVERY == 0)
             for n, upload_id in enumerate(ids)])
    return ids


def _empty(broker: Broker, url: str, ids: list[str]) -> None:
    with broker.connection() as conn:
        channel = conn.channel()
        for upload_id in ids:
            channel.queue_delete(message.upload_queue(QUEUE, upload_id))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM uploads")


@contextlib.contextmanager
def _holding(broker: Broker, queues: list[str]) -> Iterator[None]:
    """A consumer that holds one row of each of `queues`, unacked, while the block runs."""
    stop, ready = threading.Event(), threading.Event()

    def hold() -> None:
        with broker.connection() as conn:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=1)
            for queue in queues:
                channel.basic_consume(queue, lambda *_: None)
            ready.set()
            while not stop.is_set():
                conn.process_data_events(time_limit=0.2)
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    ready.wait(120)
    try:
        yield
    finally:
        stop.set()
        holder.join(timeout=30)


def _timed(read: Callable[[], object]) -> tuple[float, float]:
    seconds = []
    for _ in range(READS):
        began = time.perf_counter()
        read()
        seconds.append(time.perf_counter() - began)
    return round(statistics.median(seconds), 4), round(statistics.quantiles(seconds, n=20)[18], 4)


def _measure(broker: Broker, url: str, uploads: int) -> dict[str, float]:
    ids = _fill(broker, url, uploads)
    served = [message.upload_queue(QUEUE, i) for n, i in enumerate(ids) if n % PAUSED_EVERY]
    ledger_reader = OpenUploads(url, timeout_s=TIMEOUT_S)
    live = LiveQueues(parameters=parameters(broker), timeout_s=TIMEOUT_S)
    management = ManagementClient(base_url=broker.management_url, user=broker.user, password=broker.password,
                                  vhost="/", timeout_s=TIMEOUT_S)
    reader = Backlog(queue=QUEUE, uploads=ledger_reader, live=live, management=management)
    name = f"scaler_poll_{uploads}_uploads"
    try:
        with _holding(broker, served):
            deadline = time.monotonic() + 120
            while (counts := reader.read()).unacked_unknown or counts.messages_unacknowledged < len(served):
                assert time.monotonic() < deadline, f"the management API never counted the unacked rows: {counts}"
                time.sleep(1)
            assert (counts.uploads, counts.paused_uploads, counts.messages) == (
                len(served), uploads - len(served), ROWS_EACH * len(served)), counts
            figures = dict(zip((f"{name}_p50_s", f"{name}_p95_s"), _timed(reader.read), strict=True))
            figures[f"{name}_ledger_s"] = _timed(ledger_reader.read)[0]
            figures[f"{name}_live_s"] = _timed(lambda: live.read([*served, message.limit_queue(QUEUE)]))[0]
            figures[f"{name}_management_s"] = _timed(lambda: management.unacked(message.upload_queue(QUEUE, "")))[0]
    finally:
        reader.close()
        _empty(broker, url, ids)
    return figures


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as state, fresh_database() as url:
        broker = DockerRabbitmq.start(Path(state), data_in_memory=True)
        try:
            figures: dict[str, float] = {}
            for uploads in (100, UPLOADS):
                figures |= _measure(broker, url, uploads)
            return figures | {"scaler_poll_load_average": round(os.getloadavg()[0], 2)}
        finally:
            broker.stop()
