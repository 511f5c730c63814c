"""Rejects an oversized upload while it streams in, before it fills the disk."""

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
