"""HTTP routes: the upload, and health checks for Kubernetes probes."""

import logging
import secrets
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from kubejob import message
from producer import csv_stream
from producer.publisher import ConfirmingPublisher
from producer.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter()
bearer = HTTPBearer(auto_error=False, description="Needed only when UPLOAD_TOKEN is set.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class UploadResult(BaseModel):
    upload_id: str
    rows: int
    queue: str
    delimiter: str


class Health(BaseModel):
    status: str


class Error(BaseModel):
    """Every error answer: what is wrong and, for a bad CSV, the line it starts on."""

    error: str
    line: int | None = None


UPLOAD_ERRORS: dict[int | str, dict] = {
    400: {"model": Error, "description": "The CSV is malformed or `delimiter` is unknown; nothing was published"},
    401: {"model": Error, "description": "UPLOAD_TOKEN is set and the bearer token is missing or wrong"},
    413: {"model": Error, "description": "The upload is larger than MAX_UPLOAD_BYTES"},
    415: {"model": Error, "description": "The body is not multipart/form-data"},
    422: {"model": Error, "description": "The form has no `file` field, more than one, or one that is not a file"},
    503: {"model": Error, "description": "RabbitMQ is unreachable or did not confirm; nothing acknowledged"},
}


def require_token(settings: SettingsDep, credentials: CredentialsDep) -> None:
    expected = settings.upload_token.get_secret_value()
    given = credentials.credentials if credentials else ""
    if expected and not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


async def one_file(request: Request) -> None:
    """Refuse a form whose `file` is not a single file upload (FastAPI would keep the last one)."""
    parts = (await request.form()).getlist("file")  # the form FastAPI parsed, cached on the request
    if len(parts) > 1:
        raise HTTPException(status_code=422, detail=f"the form has {len(parts)} `file` fields; send exactly one file")
    if parts and isinstance(parts[0], str):
        raise HTTPException(status_code=422,
                            detail="the `file` field must be a file upload, e.g. curl -F file=@data.csv")


@router.post("/upload", dependencies=[Depends(require_token), Depends(one_file)], response_model=UploadResult,
             responses=UPLOAD_ERRORS)
async def upload(
    file: Annotated[UploadFile, File(description="The CSV; its first line is the header.")],
    settings: SettingsDep,
    delimiter: Annotated[str | None, Form(description="`,` `;` `\\t` `|` or comma, semicolon, tab, pipe; "
                                                      "detected from the header when left out.")] = None,
) -> UploadResult:
    """Validate the whole CSV, then publish one message per row; 200 only once all are confirmed."""
    started = time.monotonic()
    chosen = csv_stream.delimiter_named(delimiter) if delimiter else None
    rows, used = await run_in_threadpool(csv_stream.count_rows, file.file, max_line_bytes=settings.max_line_bytes,
                                         delimiter=chosen)
    file.file.seek(0)
    upload_id = uuid.uuid4().hex
    async with ConfirmingPublisher(settings) as publisher:
        records = csv_stream.read_rows(file.file, max_line_bytes=settings.max_line_bytes, delimiter=used)
        for number, (line, row) in enumerate(records, start=1):
            await publisher.publish(*message.encode(row, upload_id=upload_id, row_number=number, line=line))
        await publisher.wait_for_confirms()
    elapsed = time.monotonic() - started
    log.info("upload published", extra={"upload_id": upload_id, "rows": rows, "queue": settings.queue_name,
                                        "seconds": round(elapsed, 3)})
    return UploadResult(upload_id=upload_id, rows=rows, queue=settings.queue_name, delimiter=used)


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Error, "description": "RabbitMQ is not reachable"}})
async def readyz(settings: SettingsDep) -> Health:
    """RabbitMQ is reachable and the queue can be declared."""
    async with ConfirmingPublisher(settings):
        return Health(status="ok")
