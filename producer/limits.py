"""ASGI middleware that guard POST /upload before its body is read: size, credential, broker alarm, uploads at once."""

from collections.abc import Awaitable, Callable

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.auth import Forbidden, Principal, Unauthenticated, refusal_of
from producer.ledger import LedgerUnavailable

# What a client refused for too many uploads at once is told to wait, in seconds.
RETRY_AFTER_SECONDS = 5
# A refused upload's body up to this size is read and dropped before the answer, and the connection stays
# open: closing one with unread bytes resets it, and `kubectl port-forward` ends for good on such a reset.
# A larger body, or one of unknown length, is not read: the answer closes the connection at once.
DROP_BODY_BYTES = 64 * 1024


def too_large(max_bytes: int) -> HTTPException:
    return HTTPException(status_code=413, detail=f"upload is larger than the limit of {max_bytes} bytes")


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
    """ASGI middleware: POST /upload without a valid credential gets 401, without the `upload` scope
    403, while the broker blocks publishers 503, and past `max_uploads` at once 429.

    Each answers from the headers alone (and, for an API key, one indexed query of the ledger),
    before a byte of the body is read: FastAPI would parse the whole form, spooling it to disk,
    before any dependency runs. The caller goes to the route as the request's `state.principal`.
    """

    def __init__(self, app: ASGIApp, *, authenticate: Callable[[str | None], Awaitable[Principal]], max_uploads: int,
                 broker_blocked: Callable[[], str | None]) -> None:
        self.app, self.authenticate, self.max_uploads = app, authenticate, max_uploads
        self.broker_blocked = broker_blocked
        self.in_progress = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/upload":
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is None:
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

    async def _refusal(self, scope: Scope) -> JSONResponse | None:
        """The answer that refuses the upload, or None, the caller then put in the request's state."""
        try:
            principal = (await self.authenticate(Headers(scope=scope).get("authorization"))).allowed("upload")
        except (Unauthenticated, Forbidden) as exc:
            return refusal_of(exc)
        except LedgerUnavailable as exc:
            return JSONResponse({"error": f"PostgreSQL unavailable, nothing published: {exc}"}, status_code=503)
        if blocked := self.broker_blocked():
            # Publishing would wait for the alarm to clear, up to CONFIRM_TIMEOUT_SECONDS, then fail.
            return JSONResponse(
                {"error": f"{blocked}; nothing was read or published, try again in {RETRY_AFTER_SECONDS} s"},
                status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        if self.in_progress >= self.max_uploads:
            return JSONResponse(
                {"error": f"{self.in_progress} uploads are in progress, the most this server takes at once "
                          f"(MAX_CONCURRENT_UPLOADS); try again in {RETRY_AFTER_SECONDS} s"},
                status_code=429, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        scope.setdefault("state", {})["principal"] = principal
        return None


async def _dropped_small_body(scope: Scope, receive: Receive) -> bool:
    """Read and drop the request's body if it declares at most DROP_BODY_BYTES; whether it did."""
    length = Headers(scope=scope).get("content-length", "")
    if not length.isdigit() or int(length) > DROP_BODY_BYTES:
        return False
    while (await receive()).get("more_body", False):
        pass
    return True
