"""`python -m producer`: serve the API and its metrics with uvicorn; exit 3 if the ledger stays unreachable at start.

A producer started with PostgreSQL (`make up`, a Deployment) waits for it for
PRODUCER_DATABASE_WAIT_SECONDS instead of exiting and being restarted.
"""

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from kubejob import ledger, logs
from kubejob.errors import LedgerUnavailable
from kubejob.metrics import listening
from kubejob.settings import load_or_exit
from producer import metrics
from producer.app import create_app
from producer.settings import Settings


class MetricsServer(uvicorn.Server):
    """The metrics' server, deaf to signals: the API's server takes SIGTERM, and the process ends with it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: FastAPI, settings: Settings) -> None:
    """The API on PRODUCER_PORT and, on the same event loop while it runs, /metrics on PRODUCER_METRICS_PORT."""
    api = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=settings.producer_port, log_config=None))
    # Bound here, not by uvicorn: a port taken would end its start-up with SystemExit inside a task.
    sock = listening(settings.producer_metrics_port)
    if sock is None:
        await api.serve()
        return
    scrapes = MetricsServer(uvicorn.Config(metrics.scrape_app(app), lifespan="off", log_config=None, access_log=False))
    serving_scrapes = asyncio.create_task(scrapes.serve(sockets=[sock]))
    try:
        await api.serve()
    finally:
        scrapes.should_exit = True
        await serving_scrapes


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
asyncio.run(serve(create_app(settings), settings))
