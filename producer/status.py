"""HTTP routes that say where uploads stand: their status, the list, their failed rows, a page."""

import asyncio
import dataclasses
import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, TypeAdapter
from starlette.types import Message, Send

from kubejob.errors import KubeJobError
from producer import failed_csv
from producer.auth import Principal, ReaderDep
from producer.ledger import FailedRows, Ledger, LedgerUnavailable, Upload, UploadSummary
from producer.routes import Error, LedgerDep, SettingsDep, StatusesDep

log = logging.getLogger(__name__)
router = APIRouter()
# Many clients poll one upload (pages, scripts): one ledger read and one JSON encoding per upload and interval
# serve them all, as each poll read alone took its share of the event loop from the uploads publishing on it.
STATUS_SECONDS = 0.5
STATUSES_KEPT = 1024
PAGE = Path(__file__).with_name("page.html")
LEDGER_DOWN: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "No valid credential (API key, UPLOAD_TOKEN or OIDC token), where one is "
                                         "needed"},
    403: {"model": Error, "description": "The credential lacks the `read` scope"},
    503: {"model": Error, "description": "PostgreSQL, which holds the ledger, does not answer"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = LEDGER_DOWN | {
    404: {"model": Error, "description": "No upload of the caller's tenant has this id (or it is older than the "
                                         "retention); with `admin`, of any tenant"},
}
RawCells = Annotated[bool, Query(description=(
    "The cells exactly as they were, for a program; without it, a cell a spreadsheet would run as a formula "
    "(one starting with = + - @, a tab or a carriage return) starts with a ' instead."))]


@pydantic.dataclasses.dataclass(frozen=True)
class UploadStatus(UploadSummary):
    """What GET /uploads/{id} answers: the upload's summary, its state and pace, and where to read more."""

    upload_id: str
    tenant: str
    state: str
    cancelled: int  # rows of a cancelled upload that will have no outcome: cancelled + done + failed == rows
    rows_per_second: float | None
    eta_seconds: float | None
    status_url: str
    failed_url: str


STATUS_JSON: TypeAdapter[UploadStatus] = TypeAdapter(UploadStatus)


class UploadList(BaseModel):
    uploads: list[UploadStatus]
    next_url: str | None


def pace(upload: Upload, now: datetime) -> tuple[float | None, float | None]:
    """Rows finished per second since the upload began (until it finished or was cancelled), and the seconds left
    at that pace: none while it is paused or once it is cancelled."""
    finished = upload.done + upload.failed
    elapsed = ((upload.finished_at or upload.cancelled_at or now) - upload.created_at).total_seconds()
    if finished == 0 or elapsed <= 0:
        return None, None
    rate = finished / elapsed
    if upload.state in ("paused", "cancelled"):
        return round(rate, 1), None
    return round(rate, 1), round((upload.rows - finished) / rate, 1)


def status_of(upload: Upload, now: datetime) -> UploadStatus:
    rate, eta = pace(upload, now)
    # A row with an outcome was confirmed, whether or not the producer has written so yet (it does every
    # second): so done + failed <= confirmed <= rows in every answer.
    confirmed = min(upload.rows, max(upload.confirmed, upload.done + upload.failed))
    summary = {field.name: getattr(upload, field.name) for field in dataclasses.fields(UploadSummary)}
    cancelled = max(0, upload.rows - upload.done - upload.failed) if upload.cancelled_at else 0
    return UploadStatus(
        **summary | {"confirmed": confirmed}, upload_id=upload.id, tenant=upload.tenant, state=upload.state,
        cancelled=cancelled, rows_per_second=rate,
        eta_seconds=eta, status_url=f"/uploads/{upload.id}", failed_url=f"/uploads/{upload.id}/failed",
    )


def not_found(upload_id: str) -> HTTPException:
    """The answer for an upload that does not exist and for another tenant's alike: never confirm it exists."""
    return HTTPException(status_code=404, detail=f"no upload {upload_id!r}")


async def _found(ledger: Ledger, upload_id: str) -> Upload:
    upload = await ledger.get(upload_id)
    if upload is None:
        raise not_found(upload_id)
    return upload


async def _known(ledger: Ledger, upload_id: str, reader: Principal) -> Upload:
    upload = await _found(ledger, upload_id)
    if not reader.may_read(upload.tenant):
        raise not_found(upload_id)
    return upload


@router.get("/uploads/{upload_id}", response_model=UploadStatus, responses=NOT_FOUND)
async def upload_status(upload_id: str, reader: ReaderDep, ledger: LedgerDep, statuses: StatusesDep) -> Response:
    """Where one upload stands, as of at most STATUS_SECONDS ago: `done` exactly when done + failed == rows."""
    tenant, body = await statuses.get(upload_id, lambda: _status_json(ledger, upload_id))
    if not reader.may_read(tenant):
        raise not_found(upload_id)
    return Response(body, media_type="application/json")


async def _status_json(ledger: Ledger, upload_id: str) -> tuple[str, bytes]:
    upload = await _found(ledger, upload_id)
    return upload.tenant, STATUS_JSON.dump_json(status_of(upload, datetime.now(UTC)))


@router.get("/uploads", responses=LEDGER_DOWN)
async def recent_uploads(reader: ReaderDep, ledger: LedgerDep, limit: Annotated[int, Query(ge=1, le=200)] = 20,
                         offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> UploadList:
    """The caller's tenant's uploads, newest first, `limit` at a time; `next_url` pages on."""
    uploads = await ledger.recent(tenant=reader.tenant, limit=limit + 1, offset=offset)
    now = datetime.now(UTC)
    more = f"/uploads?limit={limit}&offset={offset + limit}" if len(uploads) > limit else None
    return UploadList(uploads=[status_of(u, now) for u in uploads[:limit]], next_url=more)


@router.get("/uploads/{upload_id}/failed", responses=NOT_FOUND | {200: {"content": {"text/csv": {}}}},
            response_class=StreamingResponse)
async def failed_rows(upload_id: str, reader: ReaderDep, ledger: LedgerDep, settings: SettingsDep,
                      raw: RawCells = False) -> StreamingResponse:
    """The dead-lettered rows as CSV: the original columns, then `_row`, `_attempts` and `_error`.

    503 with Retry-After when DOWNLOAD_CONNECTIONS downloads are being read for DOWNLOAD_TIMEOUT_SECONDS.
    """
    upload = await _known(ledger, upload_id, reader)
    rows = await ledger.failed_rows(upload.id)
    log.info("failed rows downloaded", extra={"upload_id": upload.id, "upload_tenant": upload.tenant,
                                              "tenant": reader.tenant, "key_id": reader.key_id})
    return Download(
        _csv_lines(upload, rows, raw=raw), rows=rows, upload_id=upload.id,
        stall_seconds=settings.download_timeout_seconds, media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{upload.id}-failed.csv"'},
    )


class ClientStalled(KubeJobError):
    """The client took none of a download's bytes for as long as a download may wait."""


class Download(StreamingResponse):
    """A failed-rows download that holds its download connection until it ends, and ends when its client has
    taken nothing for `stall_seconds`: else a client that reads nothing would hold the connection for good."""

    def __init__(self, content: AsyncIterator[str], *, rows: FailedRows, upload_id: str, stall_seconds: float,
                 media_type: str, headers: dict[str, str]) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self.rows, self.upload_id, self.stall_seconds = rows, upload_id, stall_seconds

    async def stream_response(self, send: Send) -> None:
        sent = 0

        async def bounded(message: Message) -> None:
            nonlocal sent
            try:
                async with asyncio.timeout(self.stall_seconds):
                    await send(message)
            except TimeoutError as exc:
                raise ClientStalled from exc
            sent += len(message.get("body", b""))

        try:
            await super().stream_response(bounded)
        except ClientStalled:
            # Left unfinished, the response is closed by the server.
            log.warning("failed-rows download ended, its client took nothing", extra={
                "upload_id": self.upload_id, "sent_bytes": sent, "stalled_seconds": self.stall_seconds})
        except LedgerUnavailable as exc:
            log.warning("failed-rows download ended, the ledger failed", extra={
                "upload_id": self.upload_id, "sent_bytes": sent, "reason": str(exc)})
        finally:
            await self.rows.close()


async def _csv_lines(upload: Upload, rows: FailedRows, *, raw: bool) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = failed_csv.writer(buffer)
    writer.writerow(failed_csv.cells([*upload.columns, *failed_csv.ADDED_COLUMNS], raw=raw))
    async for failed in rows:
        data = failed.data or {}
        writer.writerow(failed_csv.cells([*(data.get(column, "") for column in upload.columns),
                                          failed.row_number, failed.attempts, failed.error or ""], raw=raw))
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """A page that lists uploads with a live progress bar each."""
    return HTMLResponse(PAGE.read_text())
