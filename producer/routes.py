"""HTTP routes: the upload, and health checks for Kubernetes probes."""

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from kubejob import message
from kubejob.errors import BrokerUnavailable, LedgerUnavailable, Temporary
from producer import csv_stream, metrics
from producer.auth import UploaderDep
from producer.cache import ShortCache
from producer.ledger import Claim, Ledger, Upload
from producer.publisher import ConfirmingPublisher, MessageTooLarge, UploadRefused
from producer.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter()
# How often a long upload writes how far the broker has confirmed, for its status, and learns whether it was
# cancelled: it stops within that. The bound on what a retry publishes twice is PUBLISH_WINDOW, kept by writing it
# more often where needed.
PROGRESS_SECONDS = 0.5


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_ledger(request: Request) -> Ledger:
    return request.app.state.ledger


# An upload's status as JSON, with the tenant it belongs to, which each reader is checked against.
Statuses = ShortCache[tuple[str, bytes]]


def get_statuses(request: Request) -> Statuses:
    return request.app.state.statuses


SettingsDep = Annotated[Settings, Depends(get_settings)]
LedgerDep = Annotated[Ledger, Depends(get_ledger)]
StatusesDep = Annotated[Statuses, Depends(get_statuses)]


class UploadInterrupted(Temporary):
    """Publishing an upload stopped part-way, as the broker or the ledger failed (the cause says which); the broker
    has confirmed its first `confirmed` rows.

    `key_sent`: the request carried an Idempotency-Key, so a retry with it publishes only the rest.
    """

    def __init__(self, reason: str, *, upload_id: str, rows: int, confirmed: int, key_sent: bool) -> None:
        super().__init__(reason)
        self.upload_id, self.rows, self.confirmed, self.key_sent = upload_id, rows, confirmed, key_sent


class UploadResult(BaseModel):
    upload_id: str
    rows: int
    queue: str
    delimiter: str
    status_url: str


class Health(BaseModel):
    status: str


class Error(BaseModel):
    """Every error answer: what is wrong and, for a bad CSV, the line it starts on."""

    error: str
    line: int | None = None
    upload_id: str | None = None
    rows: int | None = None
    confirmed: int | None = None


UPLOAD_ERRORS: dict[int | str, dict] = {
    400: {"model": Error, "description": "The CSV is malformed or over a limit (a line, a record, the columns, a "
                                         "column name, a row's message), or `delimiter` is unknown; nothing was "
                                         "published"},
    401: {"model": Error, "description": "No valid credential (API key, UPLOAD_TOKEN or OIDC token), where one is "
                                         "needed"},
    403: {"model": Error, "description": "The credential lacks the `upload` scope"},
    415: {"model": Error, "description": "The body is not multipart/form-data"},
    429: {"model": Error, "description": "MAX_CONCURRENT_UPLOADS uploads are in progress, or the tenant has "
                                         "MAX_OPEN_UPLOADS_PER_TENANT uploads open; try again after Retry-After "
                                         "seconds"},
    409: {"model": Error, "description": "The Idempotency-Key was used with another file or other parameters, or "
                                         "its upload is being published by a request still running, or was "
                                         "cancelled; or the upload was cancelled while it was being published"},
    413: {"model": Error, "description": "The upload is larger than MAX_UPLOAD_BYTES, or RabbitMQ refused one of its "
                                         "rows as larger than its max_message_size (the upload is `failed`)"},
    422: {"model": Error, "description": "The form has no `file` field, more than one, or one that is not a file"},
    503: {"model": Error, "description": "RabbitMQ or PostgreSQL is unreachable, or RabbitMQ blocks publishers (a "
                                         "memory or disk alarm; with Retry-After); `upload_id` and `confirmed` "
                                         "say how far it got, the error how to retry"},
}


async def one_file(request: Request) -> None:
    """Refuse a form whose `file` is not a single file upload (FastAPI would keep the last one)."""
    parts = (await request.form()).getlist("file")  # the form FastAPI parsed, cached on the request
    if len(parts) > 1:
        raise HTTPException(status_code=422, detail=f"the form has {len(parts)} `file` fields; send exactly one file")
    if parts and isinstance(parts[0], str):
        raise HTTPException(status_code=422,
                            detail="the `file` field must be a file upload, e.g. curl -F file=@data.csv")


@router.post("/upload", dependencies=[Depends(one_file)], response_model=UploadResult, responses=UPLOAD_ERRORS)
async def upload(
    file: Annotated[UploadFile, File(description="The CSV; its first line is the header.")],
    uploader: UploaderDep,
    settings: SettingsDep,
    ledger: LedgerDep,
    statuses: StatusesDep,
    delimiter: Annotated[str | None, Form(description="`,` `;` `\\t` `|` or comma, semicolon, tab, pipe; "
                                                      "detected from the header when left out.")] = None,
    idempotency_key: Annotated[str | None, Header(
        min_length=1, max_length=200,
        description="A retry with the same key and file returns the same upload and publishes only the rows "
                    "the broker had not confirmed.")] = None,
) -> UploadResult | JSONResponse:
    """Validate the whole CSV, record it, then publish one message per row; 200 once all are confirmed."""
    started = time.monotonic()
    chosen = csv_stream.delimiter_named(delimiter) if delimiter else None
    summary = await run_in_threadpool(csv_stream.count_rows, file.file, limits=settings.csv_limits,
                                      max_message_bytes=settings.max_message_bytes, delimiter=chosen)
    sha256 = await run_in_threadpool(_sha256, file.file) if idempotency_key else None
    upload, claim = await ledger.start(tenant=uploader.tenant, key=idempotency_key, file_name=file.filename or "",
                                       sha256=sha256, parameters={"delimiter": summary.delimiter},
                                       columns=summary.columns, rows=summary.rows, queue=settings.queue_name,
                                       max_open=settings.max_open_uploads_per_tenant)
    if claim is not None:
        file.file.seek(0)
        try:
            stopped_at = await _publish(upload, claim, file.file, delimiter=summary.delimiter, settings=settings,
                                        key_sent=idempotency_key is not None)
        finally:
            await claim.close()
            statuses.forget(upload.id)  # a status read after this answer tells what the answer told
        if stopped_at is not None:
            return cancelled_while_publishing(upload, confirmed=stopped_at)
    elif upload.cancelled_at is not None:
        return cancelled_before(upload)
    elif upload.error is not None:
        raise UploadRefused(upload.error, upload_id=upload.id)
    elapsed = round(time.monotonic() - started, 3)
    log.info("upload published", extra={"upload_id": upload.id, "tenant": uploader.tenant, "key_id": uploader.key_id,
                                        "rows": upload.rows, "queue": upload.queue,
                                        "already_confirmed": upload.confirmed, "seconds": elapsed})
    return UploadResult(upload_id=upload.id, rows=upload.rows, queue=upload.queue, delimiter=summary.delimiter,
                        status_url=f"/uploads/{upload.id}")


async def _publish(upload: Upload, claim: Claim, file: BinaryIO, *, delimiter: str, settings: Settings,
                   key_sent: bool) -> int | None:
    """Publish the rows the broker has not confirmed yet into the upload's queue; raise UploadInterrupted saying how
    far it got. None once every row is confirmed; if the upload was cancelled meanwhile (noticed within
    PROGRESS_SECONDS), the rest is left unpublished and the answer is how many rows the broker had confirmed."""
    skip = upload.confirmed
    broker = ConfirmingPublisher(settings, queue=upload.queue)
    try:
        async with broker:  # the queues declared
            await claim.opened()
            records = csv_stream.read_rows(file, limits=settings.csv_limits, delimiter=delimiter)
            cancelled = await _send(broker, claim, records, upload_id=upload.id, skip=skip,
                                    window=settings.publish_window)
            if not cancelled:
                await broker.wait_for_confirms()
    except MessageTooLarge as exc:
        metrics.ROWS_PUBLISHED.inc(broker.confirmed)
        error = (f"row {skip + exc.published} is {exc.size} bytes as a message, more than RabbitMQ's "
                 f"max_message_size ({exc.limit}); the rows before it are queued, the upload has failed: split the "
                 f"row, or set MAX_MESSAGE_BYTES to at most {exc.limit} so that such files are refused before "
                 "anything is published")
        with contextlib.suppress(LedgerUnavailable):
            await claim.refused(error, confirmed=skip + broker.confirmed)
        raise UploadRefused(error, upload_id=upload.id) from exc
    except (BrokerUnavailable, LedgerUnavailable) as exc:
        metrics.ROWS_PUBLISHED.inc(broker.confirmed)
        confirmed = skip + broker.confirmed
        with contextlib.suppress(LedgerUnavailable):  # if so, a retry resumes from the last progress recorded
            await claim.progress(confirmed)
        raise UploadInterrupted(str(exc), upload_id=upload.id, rows=upload.rows, confirmed=confirmed,
                                key_sent=key_sent) from exc
    metrics.ROWS_PUBLISHED.inc(broker.confirmed)
    confirmed = skip + broker.confirmed
    if cancelled:
        with contextlib.suppress(LedgerUnavailable):  # if so, its status shows the last progress recorded
            await claim.progress(confirmed)
        return confirmed
    return confirmed if await claim.published() else None  # or cancelled as its last rows were confirmed


def cancelled_while_publishing(upload: Upload, *, confirmed: int) -> JSONResponse:
    """The 409 of a request whose upload was cancelled while it published it."""
    log.info("upload cancelled while publishing", extra={"upload_id": upload.id, "rows": upload.rows,
                                                         "confirmed": confirmed})
    error = (f"upload {upload.id} was cancelled while it was being published, after the broker confirmed "
             f"{confirmed} of its {upload.rows} rows: publishing stopped, and its rows will not be handled; to have "
             "them handled, send the file again as a new upload (with a new Idempotency-Key, if you send one)")
    return JSONResponse({"error": error, "upload_id": upload.id, "rows": upload.rows, "confirmed": confirmed},
                        status_code=409)


def cancelled_before(upload: Upload) -> JSONResponse:
    """The 409 of a retry, by its Idempotency-Key, of an upload that was cancelled: it is never taken up again."""
    error = (f"the upload of this Idempotency-Key, {upload.id}, was cancelled, and a cancelled upload is never "
             "taken up again: to upload the file anew, send it with a new Idempotency-Key")
    return JSONResponse({"error": error, "upload_id": upload.id, "rows": upload.rows, "confirmed": upload.confirmed},
                        status_code=409)


async def _send(broker: ConfirmingPublisher, claim: Claim, records: Iterator[tuple[int, dict[str, str]]], *,
                upload_id: str, skip: int, window: int) -> bool:
    """Publish the rows after the first `skip`; True if the upload was cancelled before the last one was sent.

    A row is published only while the ledger's `confirmed` is at most `window` (PUBLISH_WINDOW)
    rows behind it, so that a retry after any interruption, the producer's own death included,
    queues at most that many rows twice.
    """
    recorded, saved = skip, time.monotonic()
    for number, (line, row) in enumerate(records, start=1):
        if number <= skip:
            continue
        if number - recorded > window:
            # Half the window confirmed before it is recorded: one write per half a window of rows.
            await broker.wait_until_confirmed(number - skip - (window + 1) // 2)
        if number - recorded > window or time.monotonic() - saved >= PROGRESS_SECONDS:
            recorded = skip + broker.confirmed
            if await claim.progress(recorded):
                return True
            saved = time.monotonic()
        await broker.publish(*message.encode(row, upload_id=upload_id, row_number=number, line=line))
    return False


def _sha256(file: BinaryIO) -> str:
    file.seek(0)
    digest = hashlib.sha256()
    while chunk := file.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Error, "description": "RabbitMQ is not reachable or blocks "
                                                                       "publishers, or PostgreSQL does not answer"}})
async def readyz(request: Request, ledger: LedgerDep) -> Health:
    """RabbitMQ is connected and takes publishes, and PostgreSQL answers, as their watches last saw (no I/O here)."""
    problem = request.app.state.broker_watch.problem
    if problem is not None:
        raise BrokerUnavailable(problem)
    if ledger.problem is not None:
        raise LedgerUnavailable(ledger.problem)
    return Health(status="ok")
