"""`python -m producer`: serve the API with uvicorn; exit 3 if the ledger stays unreachable at start.

A producer started with PostgreSQL (`make up`, a Deployment) waits for it for
PRODUCER_DATABASE_WAIT_SECONDS instead of exiting and being restarted.
"""

import logging
import sys

import uvicorn

from kubejob import ledger, logs
from kubejob.errors import LedgerUnavailable
from kubejob.settings import load_or_exit
from producer.app import create_app
from producer.settings import Settings

settings = load_or_exit(Settings, "producer")
logs.configure(settings.log_level, secrets=settings.secrets())
log = logging.getLogger("producer")
try:
    # Waited for here, as the app's start-up would only fail with a traceback; the app migrates the schema.
    ledger.keep_trying(lambda: ledger.reachable(settings.database_url.get_secret_value(),
                                                connect_timeout=settings.database_timeout_seconds),
                       give_up_after_s=settings.producer_database_wait_seconds, log=log)
except LedgerUnavailable as exc:
    log.error("ledger unavailable at start, giving up", extra={"error": str(exc)})
    sys.exit(3)
uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.producer_port, log_config=None)
