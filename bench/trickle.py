"""Trickle: what a row costs while 5 workers share a queue fed at 3,000 rows/s, as during an upload.

While an upload is still being published, the Jobs started for its first rows keep up with it
and each gets its rows a few at a time. Here real `python -m worker` processes (no-op handler,
the ledger on) drain a queue that this process feeds at a steady rate, first with
WORKER_LINGER_SECONDS as shipped, then with 0 (every delivery handed out at once). Per row:
the CPU of the whole machine, and of the workers alone; `trickle_linger_cpu_ratio` is the
machine's with the linger over without it.
"""

import time
import uuid

import psutil

from bench import support
from kubejob import message
from tests.helpers.ledger import finished, record_upload
from tests.helpers.worker import start_worker
from worker.settings import Settings

WORKERS, RATE, SECONDS = 5, 3000, 20


def _feed(queue: str, messages: list) -> None:
    """Publish `messages` at RATE per second, paced every 50 messages."""
    with support.broker.connection() as conn:
        channel = conn.channel()
        started = time.perf_counter()
        for n, (body, properties) in enumerate(messages):
            channel.basic_publish("", queue, body, properties)
            if n % 50 == 0 and (ahead := started + n / RATE - time.perf_counter()) > 0:
                time.sleep(ahead)
        conn.process_data_events(0)


def _run(linger: str) -> tuple[float, float]:
    """Machine and workers' CPU microseconds per row, with WORKER_LINGER_SECONDS=`linger`."""
    queue, upload_id = f"bench-trickle-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex}"
    messages = support.encoded_messages(support.sample_csv(RATE * SECONDS), upload_id=upload_id)
    # An upload for the workers to serve and count their rows in, and its queue, fed as its producer would.
    record_upload(upload_id, queue=message.upload_queue(queue, upload_id), rows=len(messages))
    with support.broker.connection() as conn:
        target = support.broker.declare_upload(conn.channel(), queue, upload_id)
    # The no-op handler writes nothing to the file that the tests' handlers note rows in.
    settings = {"WORKER_HANDLER": "worker.handlers:noop", "WORKER_IDLE_SECONDS": "5",
                "WORKER_LINGER_SECONDS": linger}
    workers = [psutil.Process(start_worker(queue, support.WORK / "trickle-unused", **settings).pid)
               for _ in range(WORKERS)]
    try:
        time.sleep(2)  # started and consuming
        machine, spent = support.MachineCpu(), support.cpu_s(workers)
        _feed(target, messages)
        while finished(upload_id) < len(messages):
            time.sleep(0.1)
        per_row = 1e6 / len(messages)
        return machine.busy_s() * per_row, (support.cpu_s(workers) - spent) * per_row
    finally:
        for worker in workers:
            worker.terminate()
        psutil.wait_procs(workers, timeout=30)
        support.clean(queue)


def run() -> dict[str, float]:
    shipped = str(Settings().worker_linger_seconds)
    machine, workers = _run(shipped)
    machine_at_once, workers_at_once = _run("0")
    return {
        "trickle_cpu_us_per_row": round(machine),
        "trickle_workers_cpu_us_per_row": round(workers),
        "trickle_no_linger_cpu_us_per_row": round(machine_at_once),
        "trickle_no_linger_workers_cpu_us_per_row": round(workers_at_once),
        "trickle_linger_cpu_ratio": round(machine / machine_at_once, 3),
    }
