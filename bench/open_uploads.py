"""Open uploads: what 1,000 uploads in flight cost RabbitMQ and a worker.

Each upload has a quorum queue of its own (kubejob.message.upload_queue), and a quorum queue is a
Ra server that ticks while idle. On a RabbitMQ 4.0 of its own (Docker: the image infra/k8s runs,
its data on disk), 1,000 uploads of 10 rows, of 100 tenants, are recorded in the ledger and
declared and filled as the producer would, on one connection; measured:
- the seconds to record them, to declare and fill their queues (until the broker holds every
  row), and to delete the queues after;
- RabbitMQ's memory before and after (once they have been idle), per queue: the beam.smp
  process's RSS (psutil) and the node's `mem_used` (management API);
- RabbitMQ's CPU seconds (beam.smp, user and system) over IDLE_S with them idle, beside IDLE_S
  before they existed;
- one real worker (no-op handler, the shipped WORKER_PREFETCH, so one row an upload when they
  outnumber it) draining the 10,000 rows: its peak RSS, RabbitMQ's CPU seconds meanwhile, and its
  rows per second from the first row recorded to the last, over the same worker's on 10,000 rows
  of one upload in the same run (`open_uploads_drain_ratio`, the median of support.ROUNDS of those).

Not the local RabbitMQ: Debian's 3.10 here, started with 1,024 open files, stopped taking new
connections, everyone's, with 1,000 quorum queues (each new connection waited in
rabbit_networking:setup_socket for its file handle cache) until they were deleted. The ledger's
rows are deleted after, and the broker with all its queues.
"""

import statistics
import time
import uuid

import psutil

from bench import support
from kubejob import message
from tests.helpers import wait_for
from tests.helpers.broker import Broker
from tests.helpers.ledger import Recorded, finished_into, forget_uploads, record_uploads
from tests.helpers.rabbitmq_server import DockerRabbitmq
from tests.helpers.rss import PeakRss
from tests.helpers.uploads import named_rows
from tests.helpers.worker import start_worker

UPLOADS, ROWS, TENANTS, IDLE_S = 1000, 10, 100, 30
QUEUE = "bench-open-uploads"
MB = 1024 * 1024


def _mem_used(broker: Broker) -> int:
    """The node's mem_used, once the management API has it (not in a broker's first seconds)."""
    return wait_for(lambda: broker.node().get("mem_used"), what="the node's mem_used", timeout=60)


def _fill(broker: Broker, uploads: int, rows: int) -> tuple[float, float]:
    """Record `uploads` of `rows` rows, declare and fill their queues; the seconds each of the two took."""
    ids = [uuid.uuid4().hex for _ in range(uploads)]
    made = [Recorded(id_, message.upload_queue(QUEUE, id_), rows, f"tenant-{n % TENANTS}") for n, id_ in enumerate(ids)]
    started = time.perf_counter()
    record_uploads(made)
    recorded = time.perf_counter()
    with broker.connection() as conn:
        channel = conn.channel()
        for upload in made:  # unconfirmed, as drain.fill: the broker's count says when they are all in
            broker.fill_upload(channel, QUEUE, upload.id, named_rows(upload.id, rows))
    if (held := support.counted_in(uploads * rows, lambda: broker.backlog(QUEUE))) < uploads * rows:
        raise RuntimeError(f"RabbitMQ kept {held} of the {uploads * rows} rows sent to {QUEUE}'s uploads")
    return recorded - started, time.perf_counter() - recorded


def _drain(broker: Broker, rows: int, beam: psutil.Process) -> tuple[float, float, int]:
    """One worker draining the `rows` queued: its rows/s from the first row recorded to the last, RabbitMQ's CPU
    seconds from its start to the last row, and the worker's peak RSS."""
    cpu = support.cpu_s([beam])
    worker = start_worker(QUEUE, support.WORK / "open-uploads-unused", WORKER_HANDLER="worker.handlers:noop",
                          LOG_LEVEL="WARNING", **broker.environment())
    rss = PeakRss(worker.pid)
    first = None
    while (done := finished_into(QUEUE)) < rows:
        if first is None and done:
            first = (time.perf_counter(), done)
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited {worker.returncode} with {done} of {rows} rows done")
        time.sleep(0.01)
    last, broker_cpu = time.perf_counter(), support.cpu_s([beam]) - cpu
    assert worker.wait(timeout=60) == 0, "the worker did not exit 0 once idle"
    assert first is not None
    return (rows - first[1]) / (last - first[0]), broker_cpu, rss.join()


def _one_upload_rate(broker: Broker, rows: int, beam: psutil.Process) -> float:
    support.clean(QUEUE, broker)
    _fill(broker, 1, rows)
    rate, _, _ = _drain(broker, rows, beam)
    return rate


def _measure(broker: Broker, beam: psutil.Process, uploads: int, rows: int, idle_s: float) -> dict[str, object]:
    total = uploads * rows
    cpu = support.cpu_s([beam])
    time.sleep(idle_s)
    cpu_idle_before = support.cpu_s([beam]) - cpu
    rss_before, mem_before = beam.memory_info().rss, _mem_used(broker)
    record_s, fill_s = _fill(broker, uploads, rows)
    cpu = support.cpu_s([beam])
    time.sleep(idle_s)
    cpu_idle = support.cpu_s([beam]) - cpu
    # After the idle span: the node's mem_used is a statistic the broker refreshes every few seconds.
    rss_after, mem_after = beam.memory_info().rss, _mem_used(broker)
    rate, drain_cpu, worker_rss = _drain(broker, total, beam)
    started = time.perf_counter()
    support.clean(QUEUE, broker)
    delete_s = time.perf_counter() - started
    one_upload = statistics.median(_one_upload_rate(broker, total, beam) for _ in range(support.ROUNDS))
    return {
        "open_uploads_record_s": round(record_s, 2),
        "open_uploads_declare_fill_s": round(fill_s, 2),
        "open_uploads_delete_s": round(delete_s, 2),
        "open_uploads_broker_rss_kb_per_queue": round((rss_after - rss_before) / uploads / 1024, 1),
        "open_uploads_broker_mem_used_kb_per_queue": round((mem_after - mem_before) / uploads / 1024, 1),
        "open_uploads_broker_rss_mb_before": round(rss_before / MB),
        "open_uploads_broker_cpu_s_idle_without": round(cpu_idle_before, 2),
        "open_uploads_broker_cpu_s_idle": round(cpu_idle, 2),
        "open_uploads_broker_cpu_s_draining": round(drain_cpu, 2),
        "open_uploads_worker_peak_rss_mb": round(worker_rss / MB, 1),
        "open_uploads_drain_rows_per_s": round(rate),
        "open_uploads_one_upload_rows_per_s": round(one_upload),
        "open_uploads_drain_ratio": round(rate / one_upload, 3),
    }


def run(uploads: int = UPLOADS, rows: int = ROWS, idle_s: float = IDLE_S) -> dict[str, object]:
    state = support.WORK / "rabbitmq4-open-uploads"
    state.mkdir(parents=True, exist_ok=True)
    forget_uploads(QUEUE)
    broker = DockerRabbitmq.start(state)
    try:
        return _measure(broker, broker.beam(), uploads, rows, idle_s)
    finally:
        broker.stop()
        forget_uploads(QUEUE)
