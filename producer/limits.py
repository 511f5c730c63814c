"""ASGI middleware that guard POST /upload before its body is read: size, token, broker alarm, uploads at once."""

import secrets
from collections.abc import Callable

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What a client refused for too many uploads at once is told to wait, in seconds.
RETRY_AFTER_SECONDS = 5
# A refused upload's body up to this size is read and dropped before the answer, and the connection stays
# open: closing one with unread bytes resets it, and `kubectl port-forward` ends for good on such a reset.
# A larger body, or one of unknown length, is not read: the answer closes the connection at once.
DROP_BODY_BYTES = 64 * 1024


def too_large(max_bytes: int) -> HTTPException:
    return HTTPException(status_code=413, detail=f"upload is larger than the limit of {max_bytes} bytes")


def token_matches(expected: str, authorization: str | None) -> bool:
    """Whether an Authorization header carries the bearer token; any header does when none is expected."""
    if not expected:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), expected.encode())


class BodySizeLimit:
    """ASGI middleware: a body past `max_bytes` ends the request with 413."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            # Raised inside the route's body parsing, so FastAPI answers it like any HTTPException.
            if received > self.max_bytes:
                raise too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)


class UploadGate:
    """ASGI middleware: POST /upload without the token gets 401, while the broker blocks publishers
    503, and past `max_uploads` at once 429.

    Each answers from the headers alone, before a byte of the body is read (FastAPI would parse
    the whole form, spooling it to disk, before any dependency runs).
    """

    def __init__(self, app: ASGIApp, *, token: str, max_uploads: int,
                 broker_blocked: Callable[[], str | None]) -> None:
        self.app, self.token, self.max_uploads, self.broker_blocked = app, token, max_uploads, broker_blocked
        self.in_progress = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/upload":
            await self.app(scope, receive, send)
            return
        if not token_matches(self.token, Headers(scope=scope).get("authorization")):
            refusal = JSONResponse({"error": "a valid bearer token is required"}, status_code=401,
                                   headers={"WWW-Authenticate": "Bearer"})
        elif blocked := self.broker_blocked():
            # Publishing would wait for the alarm to clear, up to CONFIRM_TIMEOUT_SECONDS, then fail.
            refusal = JSONResponse(
                {"error": f"{blocked}; nothing was read or published, try again in {RETRY_AFTER_SECONDS} s"},
                status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        elif self.in_progress >= self.max_uploads:
            refusal = JSONResponse(
                {"error": f"{self.in_progress} uploads are in progress, the most this server takes at once "
                          f"(MAX_CONCURRENT_UPLOADS); try again in {RETRY_AFTER_SECONDS} s"},
                status_code=429, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        else:
            self.in_progress += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_progress -= 1
            return
        if not await _dropped_small_body(scope, receive):
            # Connection: close, so the server does not go on to read the body it refused.
            refusal.headers["Connection"] = "close"
        await refusal(scope, receive, send)


async def _dropped_small_body(scope: Scope, receive: Receive) -> bool:
    """Read and drop the request's body if it declares at most DROP_BODY_BYTES; whether it did."""
    length = Headers(scope=scope).get("content-length", "")
    if not length.isdigit() or int(length) > DROP_BODY_BYTES:
        return False
    while (await receive()).get("more_body", False):
        pass
    return True
