"""Fair share: how long a small upload waits behind a large one of another tenant, with one real worker.

One `python -m worker` (the `timed` handler at 1 ms a row, the shipped prefetch) serves a queue.
Tenant B's 100 rows are timed from sent to done in the ledger alone, then behind tenant A's
200,000, published first, B's once the worker is draining A's: the scenario of
tests/integration/test_fair_share.py (tests.helpers.uploads). B's rows are sent unconfirmed, in a
few milliseconds: confirmed one by one they take as long to send as to handle, and the worker
would have done most of them before the last is in. Each round ends by cancelling A's upload and
deleting its queue. `small_upload_wait_ratio` is the median time behind over the
median time alone, of support.ROUNDS rounds (the target is at most 3); A's rows still queued
when B was done must be more than 100,000, or B did not wait behind them.
"""

import statistics

from bench import support
from kubejob import message
from tests.helpers import wait_for
from tests.helpers.ledger import mark_upload
from tests.helpers.uploads import Behind, small_behind_large, time_to_done
from tests.helpers.worker import start_worker, stop

SMALL, LARGE = 100, 200_000


def _drop(queue: str, upload_id: str) -> None:
    """Cancel the upload, as its tenant would, and delete its queue once no worker consumes it."""
    mark_upload(upload_id, cancelled=True)
    name = message.upload_queue(queue, upload_id)
    with support.broker.connection() as conn:
        channel = conn.channel()
        wait_for(lambda: channel.queue_declare(name, passive=True).method.consumer_count == 0,
                 what="the worker to stop consuming the cancelled upload", timeout=30, interval=0.1)
        channel.queue_delete(name)


def run(small: int = SMALL, large: int = LARGE, rounds: int = support.ROUNDS) -> dict[str, object]:
    queue = "bench-fair-share"
    support.clean(queue)
    support.WORK.mkdir(parents=True, exist_ok=True)
    record, started = support.WORK / "fair-share-handled", support.WORK / "fair-share-started"
    for path in (record, started):
        path.unlink(missing_ok=True)
    worker = start_worker(queue, record, "timed", SLOW_SECONDS="0.001", STARTED_FILE=str(started),
                          WORKER_IDLE_SECONDS="120", LOG_LEVEL="WARNING")
    measured: list[Behind] = []
    try:
        time_to_done(support.broker, queue, "warm-up", small, tenant="B")  # the worker is up and serving
        for _ in range(rounds):
            measured.append(small_behind_large(support.broker, queue, small=small, large=large, confirm=False))
            _drop(queue, measured[-1].large)
    finally:
        stop(worker)
        support.clean(queue)
    alone = statistics.median(m.alone for m in measured)
    behind = statistics.median(m.behind for m in measured)
    still_queued = min(m.still_queued for m in measured)
    assert still_queued > large // 2, f"only {still_queued} of {large} rows were still queued: B did not wait behind A"
    return {
        "small_upload_alone_s": round(alone, 3),
        "small_upload_behind_s": round(behind, 3),
        "small_upload_wait_ratio": round(behind / alone, 2),
        "small_upload_wait_ratio_rounds": [round(m.behind / m.alone, 2) for m in measured],
        "small_upload_alone_s_rounds": [round(m.alone, 3) for m in measured],
        "small_upload_behind_s_rounds": [round(m.behind, 3) for m in measured],
        "small_upload_large_still_queued": still_queued,
    }
