"""Builds the FastAPI application and maps our errors to JSON responses."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from producer.csv_stream import CsvError
from producer.limits import BodySizeLimit
from producer.publisher import BrokerUnavailable
from producer.routes import router
from producer.settings import Settings

log = logging.getLogger(__name__)


async def csv_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CsvError)
    log.info("upload rejected", extra={"reason": exc.message, "line": exc.line})
    return JSONResponse({"error": exc.message, "line": exc.line}, status_code=400)


async def broker_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("broker unavailable", extra={"reason": str(exc)})
    return JSONResponse({"error": f"RabbitMQ unavailable, nothing acknowledged: {exc}"}, status_code=503)


async def http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and not content_type.startswith("multipart/form-data"):
        error = f"expected multipart/form-data with a `file` field, got {content_type or 'no content type'!r}"
        return JSONResponse({"error": error}, status_code=415)
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="kube-job producer", description="Upload a CSV; each row becomes a RabbitMQ message.")
    app.state.settings = settings or Settings()
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=app.state.settings.max_upload_bytes)
    app.add_exception_handler(CsvError, csv_error)
    app.add_exception_handler(BrokerUnavailable, broker_unavailable)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    return app
