"""HTTP routes that say where uploads stand: their status, the list, their failed rows, a page."""

import csv
import dataclasses
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, TypeAdapter

from producer.ledger import Ledger, Upload, UploadSummary
from producer.routes import Error, LedgerDep, StatusesDep

router = APIRouter()
# Many clients poll one upload (pages, scripts): one ledger read and one JSON encoding per upload and interval
# serve them all, as each poll read alone took its share of the event loop from the uploads publishing on it.
STATUS_SECONDS = 0.5
STATUSES_KEPT = 1024
PAGE = Path(__file__).with_name("page.html")
LEDGER_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": Error, "description": "PostgreSQL, which holds the ledger, does not answer"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = LEDGER_DOWN | {
    404: {"model": Error, "description": "No upload has this id (or it is older than the retention)"},
}


@pydantic.dataclasses.dataclass(frozen=True)
class UploadStatus(UploadSummary):
    """What GET /uploads/{id} answers: the upload's summary, its state and pace, and where to read more."""

    upload_id: str
    state: str
    rows_per_second: float | None
    eta_seconds: float | None
    status_url: str
    failed_url: str


STATUS_JSON: TypeAdapter[UploadStatus] = TypeAdapter(UploadStatus)


class UploadList(BaseModel):
    uploads: list[UploadStatus]
    next_url: str | None


def pace(upload: Upload, now: datetime) -> tuple[float | None, float | None]:
    """Rows finished per second since the upload began, and the seconds left at that pace."""
    finished = upload.done + upload.failed
    elapsed = ((upload.finished_at or now) - upload.created_at).total_seconds()
    if finished == 0 or elapsed <= 0:
        return None, None
    rate = finished / elapsed
    return round(rate, 1), round((upload.rows - finished) / rate, 1)


def status_of(upload: Upload, now: datetime) -> UploadStatus:
    rate, eta = pace(upload, now)
    # A row with an outcome was confirmed, whether or not the producer has written so yet (it does every
    # second): so done + failed <= confirmed <= rows in every answer.
    confirmed = min(upload.rows, max(upload.confirmed, upload.done + upload.failed))
    summary = {field.name: getattr(upload, field.name) for field in dataclasses.fields(UploadSummary)}
    return UploadStatus(
        **summary | {"confirmed": confirmed}, upload_id=upload.id, state=upload.state, rows_per_second=rate,
        eta_seconds=eta, status_url=f"/uploads/{upload.id}", failed_url=f"/uploads/{upload.id}/failed",
    )


async def _known(ledger: Ledger, upload_id: str) -> Upload:
    upload = await ledger.get(upload_id)
    if upload is None:
        raise HTTPException(status_code=404, detail=f"no upload {upload_id!r}")
    return upload


@router.get("/uploads/{upload_id}", response_model=UploadStatus, responses=NOT_FOUND)
async def upload_status(upload_id: str, ledger: LedgerDep, statuses: StatusesDep) -> Response:
    """Where one upload stands, as of at most STATUS_SECONDS ago: `done` exactly when done + failed == rows."""
    return Response(await statuses.get(upload_id, lambda: _status_json(ledger, upload_id)),
                    media_type="application/json")


async def _status_json(ledger: Ledger, upload_id: str) -> bytes:
    return STATUS_JSON.dump_json(status_of(await _known(ledger, upload_id), datetime.now(UTC)))


@router.get("/uploads", responses=LEDGER_DOWN)
async def recent_uploads(ledger: LedgerDep, limit: Annotated[int, Query(ge=1, le=200)] = 20,
                         offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> UploadList:
    """Uploads, newest first, `limit` at a time; `next_url` pages on."""
    uploads = await ledger.recent(limit=limit + 1, offset=offset)
    now = datetime.now(UTC)
    more = f"/uploads?limit={limit}&offset={offset + limit}" if len(uploads) > limit else None
    return UploadList(uploads=[status_of(u, now) for u in uploads[:limit]], next_url=more)


@router.get("/uploads/{upload_id}/failed", responses=NOT_FOUND | {200: {"content": {"text/csv": {}}}},
            response_class=StreamingResponse)
async def failed_rows(upload_id: str, ledger: LedgerDep) -> StreamingResponse:
    """The dead-lettered rows as CSV: the original columns, then `_row`, `_attempts` and `_error`."""
    upload = await _known(ledger, upload_id)
    return StreamingResponse(
        _csv_lines(ledger, upload), media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{upload.id}-failed.csv"'},
    )


async def _csv_lines(ledger: Ledger, upload: Upload) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*upload.columns, "_row", "_attempts", "_error"])
    async for failed in ledger.failed_rows(upload.id):
        data = failed.data or {}
        writer.writerow([*(data.get(column, "") for column in upload.columns),
                         failed.row_number, failed.attempts, failed.error or ""])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """A page that lists uploads with a live progress bar each."""
    return HTMLResponse(PAGE.read_text())
