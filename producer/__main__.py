"""`python -m producer`: serve the API with uvicorn; exit 3 if the ledger cannot be reached at start."""

import logging
import sys

import psycopg
import uvicorn

from kubejob import ledger, logs
from kubejob.settings import load_or_exit
from producer.app import create_app
from producer.settings import Settings

settings = load_or_exit(Settings, "producer")
logs.configure(settings.log_level, secrets=settings.secrets())
try:
    # Here rather than only in the app's start-up, whose failure uvicorn reports as a traceback.
    ledger.migrate(settings.database_url.get_secret_value(), connect_timeout=settings.database_timeout_seconds)
except psycopg.Error as exc:
    logging.getLogger("producer").error("ledger unavailable at start", extra={"error": ledger.reason(exc)})
    sys.exit(3)
uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.producer_port, log_config=None)
