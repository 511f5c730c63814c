"""`python -m worker`: drain the queue, exit 0 when it is empty (or on SIGTERM), 1 if the broker fails."""

import logging
import sys

from kubejob import logs
from kubejob.settings import load_or_exit
from worker.consumer import BrokerError, Consumer, install_sigterm
from worker.settings import Settings

log = logging.getLogger("worker")
settings = load_or_exit(Settings, "worker")
logs.configure(settings.log_level, secrets=settings.secrets())
consumer = Consumer(settings, settings.handler())
install_sigterm(consumer)
try:
    consumer.run()
except BrokerError as exc:
    log.error("broker connection failed", extra={"error": str(exc), "handled": consumer.handled})
    sys.exit(1)
