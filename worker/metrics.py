"""The worker's Prometheus metrics, served on WORKER_METRICS_PORT while it drains.

Counted where outcomes are settled, a batch at a time, so the per-row cost is one histogram
observation of the handler's time.
"""

from prometheus_client import Counter, Histogram

ROWS = Counter(
    "kubejob_worker_rows_total",
    "Rows settled by outcome: done; retried (published again for another attempt); dead_lettered "
    "(failed WORKER_MAX_ATTEMPTS times, or not a row); already_done (a redelivery the ledger had, acked unhandled); "
    "paused (given back unstarted, its upload paused); cancelled (dropped unstarted, its upload cancelled).",
    ["outcome"],
)
DONE, RETRIED, DEAD_LETTERED, ALREADY_DONE, PAUSED, CANCELLED = (
    ROWS.labels(o) for o in ("done", "retried", "dead_lettered", "already_done", "paused", "cancelled"))
HANDLER_SECONDS = Histogram(
    "kubejob_worker_handler_duration_seconds", "Time WORKER_HANDLER took per row, failed attempts included.",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)
REDELIVERIES = Counter(
    "kubejob_worker_redeliveries_total",
    "Messages the broker delivered again: an earlier consumer did not ack them (it died or lost its connection).",
)
