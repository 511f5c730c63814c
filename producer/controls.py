"""HTTP routes that change how one upload is served: cancel it, pause it, resume it.

Each takes the `upload` scope and the upload's own tenant: another tenant's upload is a 404, as
for reads, and an `admin` of another tenant, who may read it, gets 403. Each answers the upload's
status, as GET /uploads/{id} does, at once up to date; done twice, each changes nothing more.
Workers read what to serve from the ledger every half second (kubejob.ledger.open_uploads).
"""

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from producer.auth import ControllerDep, Forbidden, Principal
from producer.ledger import Ledger, Upload
from producer.routes import Error, LedgerDep, StatusesDep
from producer.status import LEDGER_DOWN, STATUS_JSON, UploadStatus, not_found, status_of

log = logging.getLogger(__name__)
router = APIRouter()
CONTROL_ERRORS: dict[int | str, dict[str, Any]] = LEDGER_DOWN | {
    403: {"model": Error, "description": "The credential lacks the `upload` scope, or is an `admin`'s of another "
                                         "tenant: only the upload's own tenant may change it"},
    404: {"model": Error, "description": "No upload of the caller's tenant has this id (or it is older than the "
                                         "retention)"},
    409: {"model": Error, "description": "The upload cannot take this change: it is done, or cancelled; the error "
                                         "says which, and what to do instead"},
}


def conflict(error: str) -> HTTPException:
    return HTTPException(status_code=409, detail=error)


async def _owned(ledger: Ledger, upload_id: str, caller: Principal) -> None:
    upload = await ledger.get(upload_id)
    if upload is None or not caller.may_read(upload.tenant):
        raise not_found(upload_id)
    if upload.tenant != caller.tenant:
        raise Forbidden(f"upload {upload_id!r} belongs to tenant {upload.tenant!r}: only a credential of that tenant "
                        "with the `upload` scope may cancel, pause or resume it")


def _answer(upload: Upload | None, upload_id: str, caller: Principal, statuses: StatusesDep, event: str) -> Response:
    if upload is None:  # deleted meanwhile, past the retention
        raise not_found(upload_id)
    statuses.forget(upload.id)  # a status read after this answer tells what the answer told
    log.info(event, extra={"upload_id": upload.id, "tenant": caller.tenant, "key_id": caller.key_id,
                           "state": upload.state, "rows": upload.rows, "done": upload.done, "failed": upload.failed})
    return Response(STATUS_JSON.dump_json(status_of(upload, datetime.now(UTC))), media_type="application/json")


def _done(upload: Upload, what: str) -> str:
    return (f"upload {upload.id!r} is done: each of its {upload.rows} rows has an outcome, so there is nothing left "
            f"to {what}")


def _cancelled(upload: Upload, what: str) -> str:
    return (f"upload {upload.id!r} was cancelled, so it cannot be {what}; to have its rows handled, upload the file "
            "again (with a new Idempotency-Key, if you send one)")


@router.delete("/uploads/{upload_id}", response_model=UploadStatus, responses=CONTROL_ERRORS)
async def cancel_upload(upload_id: str, caller: ControllerDep, ledger: LedgerDep, statuses: StatusesDep) -> Response:
    """Cancel the upload: workers drop its rows not handled yet, and a request still publishing it stops with 409.
    409 if it is done already."""
    await _owned(ledger, upload_id, caller)
    cancelled, upload = await ledger.cancel(upload_id)
    if upload is not None and not cancelled:
        raise conflict(_done(upload, "cancel"))
    return _answer(upload, upload_id, caller, statuses, "upload cancelled")


@router.post("/uploads/{upload_id}/pause", response_model=UploadStatus, responses=CONTROL_ERRORS)
async def pause_upload(upload_id: str, caller: ControllerDep, ledger: LedgerDep, statuses: StatusesDep) -> Response:
    """Pause the upload: workers start none of its rows until it is resumed (publishing goes on, the rows wait in
    its queue). 409 if it is done or cancelled."""
    await _owned(ledger, upload_id, caller)
    paused, upload = await ledger.pause(upload_id)
    if upload is not None and not paused:
        raise conflict(_cancelled(upload, "paused") if upload.cancelled_at else _done(upload, "pause"))
    return _answer(upload, upload_id, caller, statuses, "upload paused")


@router.post("/uploads/{upload_id}/resume", response_model=UploadStatus, responses=CONTROL_ERRORS)
async def resume_upload(upload_id: str, caller: ControllerDep, ledger: LedgerDep, statuses: StatusesDep) -> Response:
    """Resume a paused upload: workers take its rows again. 409 if it was cancelled."""
    await _owned(ledger, upload_id, caller)
    resumed, upload = await ledger.resume(upload_id)
    if upload is not None and not resumed:
        raise conflict(_cancelled(upload, "resumed"))
    return _answer(upload, upload_id, caller, statuses, "upload resumed")
