"""`python -m worker`: drain the queue, exit 0 when it is empty (or on SIGTERM), 1 if the broker fails."""

import logging
import sys

from worker import handlers, logs
from worker.consumer import BrokerError, Consumer, install_sigterm
from worker.settings import Settings

log = logging.getLogger("worker")
settings = Settings()
logs.configure(settings.log_level)
try:
    consumer = Consumer(settings, handlers.load(settings.worker_handler))
except handlers.HandlerNotFound as exc:
    log.error("bad setting", extra={"error": str(exc)})
    sys.exit(2)
install_sigterm(consumer)
try:
    consumer.run()
except BrokerError as exc:
    log.error("broker connection failed", extra={"error": str(exc), "handled": consumer.handled})
    sys.exit(1)
