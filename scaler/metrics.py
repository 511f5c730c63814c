"""The scaler's Prometheus metrics, served on SCALER_METRICS_PORT.

The gauges hold what the last successful poll read; `kubejob_scaler_last_poll_success_timestamp_seconds`
says how old that is.
"""

from prometheus_client import Counter, Gauge, Histogram

QUEUE_MESSAGES = Gauge("kubejob_scaler_queue_messages",
                       "Backlog: ready plus unacked messages of the served uploads' queues and <queue>.limit.")
QUEUE_READY = Gauge("kubejob_scaler_queue_messages_ready", "Messages waiting for a consumer.")
QUEUE_UNACKED = Gauge("kubejob_scaler_queue_messages_unacked", "Messages delivered to a worker and not acked yet.")
QUEUE_CONSUMERS = Gauge("kubejob_scaler_queue_consumers",
                        "The most consumers any served upload's queue has: the workers draining them.")
UPLOADS = Gauge(
    "kubejob_scaler_uploads",
    "Open uploads by state: served (their queues are the backlog), paused, ended (cancelled or finished).", ["state"],
)
JOBS_UNFINISHED = Gauge(
    "kubejob_scaler_jobs_unfinished",
    "Worker Jobs not finished, by state: running (a ready pod) or pending (none yet).", ["state"],
)
JOBS_CREATED = Counter("kubejob_scaler_jobs_created_total", "Worker Jobs the scaler created.")
DECISIONS = Counter(
    "kubejob_scaler_decisions_total", "Polls by the rule that decided (scaler.decide.KINDS).", ["kind"],
)
POLL_ERRORS = Counter("kubejob_scaler_poll_errors_total", "Polls that failed, by error type.", ["type"])
POLL_SECONDS = Histogram(
    "kubejob_scaler_poll_duration_seconds", "Time one poll took: reading the queue and the Jobs, creating Jobs.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAST_SUCCESS = Gauge(
    "kubejob_scaler_last_poll_success_timestamp_seconds",
    "Unix time of the last poll that read the queue and the Jobs.",
)
