"""`python -m worker`: drain the queue, exit 0 when it is empty (or on SIGTERM).

Exit codes (the Job template's podFailurePolicy reads them):
- 1: the broker failed; 3: the ledger stayed unreachable. The rows it had not acked go back to
  the queue, and the Job's backoff decides when a new pod tries.
- 2: a configuration that can never work (a bad setting, or a queue declared before with other
  arguments); the Job fails at once instead of retrying.
- 4: a row outlived WORKER_ROW_TIMEOUT_SECONDS; that counted as one of its attempts, the other
  rows went back to the queue, and the Job's restart policy starts a fresh worker.
"""

import logging
import sys

from kubejob import ledger as schema
from kubejob import logs, metrics
from kubejob.errors import BrokerUnavailable, LedgerUnavailable
from kubejob.settings import EXIT_CONFIG, load_or_exit
from worker.consumer import Consumer, QueueMismatch, install_sigterm
from worker.ledger import Ledger
from worker.rows import RowTimedOut
from worker.settings import Settings

log = logging.getLogger("worker")


def open_ledger(settings: Settings) -> Ledger:
    """The ledger, its schema up to date; retried as an unreachable one is while draining."""
    ledger = Ledger(settings.database_url.get_secret_value(), timeout_s=settings.database_timeout_seconds)
    try:
        schema.keep_trying(ledger.open, give_up_after_s=settings.worker_database_retry_seconds, log=log)
    except LedgerUnavailable as exc:
        log.error("ledger unavailable, giving up", extra={"error": str(exc)})
        sys.exit(3)
    return ledger


settings = load_or_exit(Settings, "worker")
logs.configure(settings.log_level, secrets=settings.secrets())
metrics.serve(settings.worker_metrics_port)
ledger = open_ledger(settings)
consumer = Consumer(settings, settings.handler(), ledger)
install_sigterm(consumer)
try:
    consumer.run()
except BrokerUnavailable as exc:
    log.error("broker connection failed", extra={"error": str(exc), "handled": consumer.handled})
    sys.exit(1)
except LedgerUnavailable as exc:
    log.error("ledger unavailable, giving up", extra={"error": str(exc), "handled": consumer.handled})
    sys.exit(3)
except QueueMismatch as exc:
    log.error("queue cannot be declared", extra={"error": str(exc)})
    sys.exit(EXIT_CONFIG)
except RowTimedOut as exc:
    log.error("exiting after a row outlived its time limit", extra={"error": str(exc), "handled": consumer.handled})
    sys.exit(4)
finally:
    ledger.close()
