"""Builds the FastAPI application, opens the ledger, and maps our errors to JSON responses."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from kubejob import ledger as schema
from kubejob.errors import BrokerUnavailable, LedgerUnavailable
from kubejob.settings import load
from producer import controls, metrics, routes, status
from producer.auth import Authenticator, Forbidden, Unauthenticated, refusal_of
from producer.broker_watch import PROBE_SECONDS, BrokerWatch
from producer.cache import ShortCache
from producer.csv_stream import CsvError
from producer.ledger import DownloadsBusy, KeyReused, Ledger, TooManyOpen, UploadBusy
from producer.limits import RETRY_AFTER_SECONDS, BodyDrop, BodySizeLimit, UploadGate
from producer.oidc import IssuerUnavailable
from producer.publisher import UploadRefused
from producer.queue_sweep import keep_sweeping, sweep_all
from producer.routes import UploadInterrupted
from producer.settings import Settings

log = logging.getLogger(__name__)


async def csv_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CsvError)
    log.info("upload rejected", extra={"reason": exc.message, "line": exc.line})
    return JSONResponse({"error": exc.message, "line": exc.line}, status_code=400)


def _uploading(request: Request) -> bool:
    return request.method == "POST" and request.url.path == "/upload"


async def broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("broker unavailable", extra={"reason": str(exc)})
    done = "nothing published" if _uploading(request) else "not ready"
    return JSONResponse({"error": f"RabbitMQ unavailable, {done}: {exc}"}, status_code=503)


async def upload_interrupted(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UploadInterrupted)
    fields = {"upload_id": exc.upload_id, "rows": exc.rows, "confirmed": exc.confirmed}
    log.warning("upload interrupted", extra=fields | {"reason": str(exc), "key_sent": exc.key_sent})
    error = f"publishing stopped after the broker confirmed {exc.confirmed} of {exc.rows} rows ({exc}); "
    if exc.key_sent:
        error += "send the file again with the same Idempotency-Key to publish only the rest"
    else:
        error += (f"those rows stay queued as upload {exc.upload_id}, and the file sent again without an "
                  "Idempotency-Key is a new upload that queues every row again: send uploads with an "
                  "Idempotency-Key header, and a retry with it publishes only the rest")
    return JSONResponse({"error": error} | fields, status_code=503)


async def upload_refused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UploadRefused)
    log.warning("upload refused by the broker", extra={"upload_id": exc.upload_id, "reason": str(exc)})
    return JSONResponse({"error": str(exc), "upload_id": exc.upload_id}, status_code=413)


async def ledger_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("ledger unavailable", extra={"reason": str(exc)})
    done = "nothing published" if _uploading(request) else "try again shortly"
    return JSONResponse({"error": f"PostgreSQL unavailable, {done}: {exc}"}, status_code=503)


async def downloads_busy(request: Request, exc: Exception) -> JSONResponse:
    settings: Settings = request.app.state.settings
    log.warning("failed-rows download refused, no download connection free", extra={
        "download_connections": settings.download_connections, "waited_seconds": settings.download_timeout_seconds})
    error = (f"{settings.download_connections} downloads are being read, the most at once (DOWNLOAD_CONNECTIONS), "
             f"and none ended within {settings.download_timeout_seconds:g} s; try again in {RETRY_AFTER_SECONDS} s")
    return JSONResponse({"error": error}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def key_conflict(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, KeyReused):
        error = (f"this Idempotency-Key was used for {exc.differs}; send the same file and parameters to retry "
                 "that upload, or use a new key for a new upload")
        return JSONResponse({"error": error, "upload_id": exc.upload_id}, status_code=409)
    error = ("an upload with this Idempotency-Key is being published by a request still running; try again when "
             "it has answered")
    return JSONResponse({"error": error, "upload_id": str(exc)}, status_code=409)


async def too_many_open(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TooManyOpen)
    log.warning("upload refused, too many open", extra={"tenant": exc.tenant, "open_uploads": exc.open_uploads})
    error = (f"tenant {exc.tenant!r} has {exc.open_uploads} uploads open, neither done nor cancelled, the most at once "
             f"(MAX_OPEN_UPLOADS_PER_TENANT); wait for some to be done, or cancel some (DELETE /uploads/{{id}}), then "
             "try again")
    return JSONResponse({"error": error}, status_code=429, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def auth_refused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Unauthenticated | Forbidden)
    return refusal_of(exc)


async def issuer_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("OIDC issuer unavailable", extra={"reason": str(exc)})
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names the methods of the first route of the path only; GET and DELETE /uploads/{id} are two.
        headers = {**(headers or {}), "Allow": ", ".join(_methods_of(request))}
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)


def _methods_of(request: Request) -> list[str]:
    """Every method the request's path is served for."""
    return sorted({method for route in request.app.router.routes
                   if isinstance(route, BaseRoute) and route.matches(request.scope)[0] != Match.NONE
                   for method in getattr(route, "methods", None) or ()})


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and not content_type.startswith("multipart/form-data"):
        error = f"expected multipart/form-data with a `file` field, got {content_type or 'no content type'!r}"
        return JSONResponse({"error": error}, status_code=415)
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)


TASKS_END_S = 5  # the most the background tasks get to end at shutdown


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Bring the ledger's schema up to date, open its pool, and forget old uploads and delete the queues no longer
    needed while running."""
    settings: Settings = app.state.settings
    url, timeout = settings.database_url.get_secret_value(), settings.database_timeout_seconds
    version = await run_in_threadpool(schema.migrate, url, connect_timeout=timeout)
    # Checked as it is handed out (an empty query, one round trip), so that the first request after PostgreSQL
    # came back gets a live connection, not one that broke while it was gone; status reads are cached, so the
    # check is paid about twice a second per upload polled.
    pool = AsyncConnectionPool(url, min_size=1, max_size=10, timeout=timeout, open=False,
                               check=AsyncConnectionPool.check_connection, reconnect_timeout=timeout,
                               kwargs={"connect_timeout": int(max(1, timeout))})
    # PostgreSQL ends a download's session that waits for its client longer than the timeout, or whose statement
    # runs longer: a backstop to the download's own bound on a client that takes nothing.
    limit_ms = round(settings.download_timeout_seconds * 1000)
    downloads = AsyncConnectionPool(
        url, min_size=1, max_size=settings.download_connections, timeout=settings.download_timeout_seconds,
        open=False, check=AsyncConnectionPool.check_connection, reconnect_timeout=timeout,
        kwargs={"connect_timeout": int(max(1, timeout)),
                "options": f"-c statement_timeout={limit_ms} -c idle_in_transaction_session_timeout={limit_ms}"})
    await pool.open()
    await downloads.open()
    app.state.ledger = Ledger(pool, downloads=downloads, conninfo=url, connect_timeout=timeout)
    log.info("ledger ready", extra={"schema_version": version})
    app.state.auth = Authenticator(settings, app.state.ledger)
    if await app.state.auth.open():
        log.warning("the API is open, every request is tenant `default` with every scope: neither UPLOAD_TOKEN nor "
                    "OIDC_ISSUER is set and the ledger holds no API key (python -m producer.keys create)")
    app.state.broker_watch.start()
    forgetting = asyncio.create_task(_forget_old_uploads(app.state.ledger, settings))
    watching = asyncio.create_task(app.state.ledger.watch(PROBE_SECONDS))
    sweeping = asyncio.create_task(keep_sweeping(app.state.ledger, settings))
    try:
        yield
    finally:
        # Ended before the pool closes: closing it fails a task waiting for a connection with PoolClosed, which
        # the task takes for an outage and sleeps on, and on Python 3.11 a cancel that meets that wake-up can be
        # lost (asyncio.wait_for). A CI run hung on it in a test's teardown.
        for task in (forgetting, watching, sweeping):
            task.cancel()
        await app.state.broker_watch.stop()
        await asyncio.wait((forgetting, watching, sweeping), timeout=TASKS_END_S)
        await downloads.close()
        await pool.close()


async def _forget_old_uploads(ledger: Ledger, settings: Settings) -> None:
    age = timedelta(days=settings.ledger_retention_days)
    while True:
        try:
            await sweep_all(ledger, settings)  # their queues first: once forgotten, nothing would delete them
            deleted = await ledger.forget_older_than(age)
            if deleted:
                log.info("old uploads deleted", extra={"uploads": deleted, "older_than_days": age.days})
        except (LedgerUnavailable, BrokerUnavailable) as exc:
            log.warning("deleting old uploads failed", extra={"reason": str(exc)})
        await asyncio.sleep(3600)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)  # a bad variable is named, as at `python -m producer`
    docs = settings.producer_api_docs
    app = FastAPI(title="kube-job producer", description="Upload a CSV; each row becomes a RabbitMQ message.",
                  lifespan=lifespan, openapi_url="/openapi.json" if docs else None,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None)
    app.state.settings = settings
    app.state.broker_watch = watch = BrokerWatch(app.state.settings)
    app.state.statuses = ShortCache(seconds=status.STATUS_SECONDS, size=status.STATUSES_KEPT)
    app.include_router(routes.router)
    app.include_router(status.router)
    app.include_router(controls.router)
    settings = app.state.settings
    drop = BodyDrop(max_bytes=settings.max_upload_bytes, seconds=settings.refused_upload_drop_seconds)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes, drop=drop)
    # Added after the size limit, so it runs before it: a refused upload is not counted against the limit.
    app.add_middleware(UploadGate, authenticate=lambda header: app.state.auth.principal(header),
                       max_uploads=settings.max_concurrent_uploads, broker_blocked=lambda: watch.blocked, drop=drop)
    # Outermost, so every answer to an upload is counted, the gate's refusals included.
    app.add_middleware(metrics.UploadMetrics)
    app.add_exception_handler(CsvError, csv_error)
    app.add_exception_handler(UploadInterrupted, upload_interrupted)
    app.add_exception_handler(UploadRefused, upload_refused)
    app.add_exception_handler(BrokerUnavailable, broker_unavailable)
    app.add_exception_handler(LedgerUnavailable, ledger_unavailable)
    app.add_exception_handler(DownloadsBusy, downloads_busy)
    app.add_exception_handler(KeyReused, key_conflict)
    app.add_exception_handler(UploadBusy, key_conflict)
    app.add_exception_handler(TooManyOpen, too_many_open)
    app.add_exception_handler(Unauthenticated, auth_refused)
    app.add_exception_handler(Forbidden, auth_refused)
    app.add_exception_handler(IssuerUnavailable, issuer_unavailable)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    return app
