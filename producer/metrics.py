"""The producer's Prometheus metrics, served at GET /metrics by an app of their own on PRODUCER_METRICS_PORT.

Counters and histograms live in the process; the progress of uploads not done yet nor cancelled
(paused ones included) is read from the ledger on each scrape (the newest IN_PROGRESS_LIMIT), so
it is the ledger's truth whichever producer published them. No series names a file or holds a
row's data: the port needs no key.
"""

import time
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubejob.errors import LedgerUnavailable
from producer.ledger import Ledger, Upload

UPLOADS = Counter("kubejob_producer_uploads_total", "Answers to POST /upload, by HTTP status code.", ["code"])
UPLOAD_SECONDS = Histogram(
    "kubejob_producer_upload_duration_seconds",
    "Time from an upload's request to its 200: reading, recording and publishing every row.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
UPLOADS_IN_PROGRESS = Gauge("kubejob_producer_uploads_in_progress", "POST /upload requests not answered yet.")
ROWS_PUBLISHED = Counter("kubejob_producer_rows_published_total", "Rows the broker confirmed it stored.")
CONFIRM_WAIT_SECONDS = Histogram(
    "kubejob_producer_confirm_wait_seconds",
    "Each wait for the broker's confirms: when PUBLISH_WINDOW messages are in flight, and for an upload's last rows.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPLOAD_QUEUES_DELETED = Counter(
    "kubejob_producer_upload_queues_deleted_total",
    "Queues of finished or cancelled uploads this producer deleted, past UPLOAD_QUEUE_GRACE_SECONDS.",
)
# Bounds the series a scrape adds: uploads in progress beyond it are the oldest, and rare.
IN_PROGRESS_LIMIT = 100


class UploadMetrics:
    """ASGI middleware: counts each POST /upload by its status code and times the accepted ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/upload" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        status, started = 500, time.monotonic()  # 500: what the server answers if the app raised

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with UPLOADS_IN_PROGRESS.track_inprogress():
            try:
                await self.app(scope, receive, noted)
            finally:
                UPLOADS.labels(str(status)).inc()
                if status == 200:
                    UPLOAD_SECONDS.observe(time.monotonic() - started)


class UploadProgress(Collector):
    """Rows of each upload in progress as the ledger has them, and whether the ledger answered."""

    def __init__(self, uploads: list[Upload], *, ledger_up: bool) -> None:
        self._uploads, self._ledger_up = uploads, ledger_up

    def collect(self) -> Iterator[Metric]:
        labels = ["upload_id", "queue"]
        families = {
            "rows": GaugeMetricFamily("kubejob_upload_rows", "Rows in an upload in progress.", labels=labels),
            "confirmed": GaugeMetricFamily("kubejob_upload_confirmed_rows", "Its rows the broker confirmed.",
                                           labels=labels),
            "done": GaugeMetricFamily("kubejob_upload_done_rows", "Its rows handled successfully.", labels=labels),
            "failed": GaugeMetricFamily("kubejob_upload_failed_rows", "Its rows dead-lettered.", labels=labels),
        }
        paused = GaugeMetricFamily("kubejob_upload_paused", "1 while the upload is paused: its rows wait.",
                                   labels=labels)
        for upload in self._uploads:
            for field, family in families.items():
                family.add_metric([upload.id, upload.queue], getattr(upload, field))
            paused.add_metric([upload.id, upload.queue], int(upload.paused_at is not None))
        yield from families.values()
        yield paused
        yield GaugeMetricFamily("kubejob_producer_ledger_up", "1 if this scrape could read the ledger.",
                                value=int(self._ledger_up))


def exposition(uploads: list[Upload], *, ledger_up: bool) -> bytes:
    """The process's metrics, then `uploads` (in progress, as just read from the ledger)."""
    progress = CollectorRegistry()
    progress.register(UploadProgress(uploads, ledger_up=ledger_up))
    return generate_latest(REGISTRY) + generate_latest(progress)


def scrape_app(api: FastAPI) -> Starlette:
    """The app of GET /metrics, reading the uploads in progress from the ledger of `api` at each scrape."""

    async def scrape(_request: Request) -> Response:
        # The API's lifespan opens the ledger and closes it: a scrape before or after reads it as down.
        ledger: Ledger | None = getattr(api.state, "ledger", None)
        try:
            uploads = await ledger.unfinished(limit=IN_PROGRESS_LIMIT) if ledger else None
        except LedgerUnavailable:
            uploads = None
        return Response(exposition(uploads or [], ledger_up=uploads is not None), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", scrape)])
