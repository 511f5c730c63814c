"""ASGI middleware that guard POST /upload before its body is read: size, credential, broker alarm, uploads at once."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubejob.errors import LedgerUnavailable
from producer.auth import Forbidden, Principal, Unauthenticated, refusal_of
from producer.oidc import IssuerUnavailable

log = logging.getLogger(__name__)
# What a client refused for too many uploads at once is told to wait, in seconds.
RETRY_AFTER_SECONDS = 5


def too_large(max_bytes: int) -> HTTPException:
    return HTTPException(status_code=413, detail=f"upload is larger than the limit of {max_bytes} bytes")


class BodyDrop:
    """How much of a refused upload's body is read and dropped after the answer: `max_bytes` for `seconds`.

    Closing a connection with unread bytes resets it, and `kubectl port-forward` ends for good on
    a reset from the pod. So a refusal goes out whole at once, and the body is read until it ends
    before the response does: a client such as curl stops sending when it reads the answer and
    closes its side, and one that sends it all can use the connection again. Past the bound the
    response is left unfinished, so the server closes the connection, reset or not.
    """

    def __init__(self, *, max_bytes: int, seconds: float) -> None:
        self.max_bytes, self.seconds = max_bytes, seconds

    def sender(self, receive: Receive, send: Send, *, body_coming: bool = True) -> Send:
        """A `send` for a refusal that drops the body before the response ends; when not `body_coming`,
        the response says `Connection: close` instead."""

        async def refusing(message: Message) -> None:
            if message["type"] == "http.response.start":
                if not body_coming:
                    message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            elif body_coming and not message.get("more_body", False):
                await send({**message, "more_body": True})
                if not await self._dropped(receive):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        return refusing

    async def _dropped(self, receive: Receive) -> bool:
        """Read the body to its end, or to the client's disconnect, within the bound; whether it did."""
        dropped, started, ended = 0, time.monotonic(), False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.seconds):
                while not ended and dropped <= self.max_bytes:
                    message = await receive()  # http.disconnect, once the client closed, has no more_body
                    dropped, ended = dropped + len(message.get("body", b"")), not message.get("more_body", False)
        if not ended:
            log.warning("refused upload's body not read to its end, closing the connection", extra={
                "dropped_bytes": dropped, "seconds": round(time.monotonic() - started, 1),
                "max_bytes": self.max_bytes, "max_seconds": self.seconds})
        return ended


class BodySizeLimit:
    """ASGI middleware: a body past `max_bytes` ends the request with 413, the rest of it dropped by `drop`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, drop: BodyDrop) -> None:
        self.app, self.max_bytes, self.drop = app, max_bytes, drop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received, unread = 0, False
        refusing = self.drop.sender(receive, send)

        async def counted() -> Message:
            nonlocal received, unread
            message = await receive()
            received += len(message.get("body", b""))
            # Raised inside the route's body parsing, so FastAPI answers it like any HTTPException.
            if received > self.max_bytes:
                # Nothing to drop when this was the body's last part: a read past its end waits for the client to go.
                unread = message.get("more_body", False)
                raise too_large(self.max_bytes)
            return message

        async def answering(message: Message) -> None:
            await (refusing if unread else send)(message)

        await self.app(scope, counted, answering)


class UploadGate:
    """ASGI middleware: POST /upload without a valid credential gets 401, without the `upload` scope
    403, while the broker blocks publishers 503, and past `max_uploads` at once 429.

    Each answers from the headers alone (and, for an API key, one indexed query of the ledger),
    before a byte of the body is read: FastAPI would parse the whole form, spooling it to disk,
    before any dependency runs. The body is then dropped by `drop`. The caller goes to the route
    as the request's `state.principal`.
    """

    def __init__(self, app: ASGIApp, *, authenticate: Callable[[str | None], Awaitable[Principal]], max_uploads: int,
                 broker_blocked: Callable[[], str | None], drop: BodyDrop) -> None:
        self.app, self.authenticate, self.max_uploads = app, authenticate, max_uploads
        self.broker_blocked, self.drop = broker_blocked, drop
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
        # A client that waits for `100 Continue` sends no body after a final answer (uvicorn sends the
        # 100 only when the body is first read), so there is nothing to drop.
        waiting = Headers(scope=scope).get("expect", "").lower() == "100-continue"
        await refusal(scope, receive, self.drop.sender(receive, send, body_coming=not waiting))

    async def _refusal(self, scope: Scope) -> JSONResponse | None:
        """The answer that refuses the upload, or None, the caller then put in the request's state."""
        try:
            principal = (await self.authenticate(Headers(scope=scope).get("authorization"))).allowed("upload")
        except (Unauthenticated, Forbidden) as exc:
            return refusal_of(exc)
        except LedgerUnavailable as exc:
            return JSONResponse({"error": f"PostgreSQL unavailable, nothing published: {exc}"}, status_code=503)
        except IssuerUnavailable as exc:
            return JSONResponse({"error": f"{exc}; nothing was read or published"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
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
