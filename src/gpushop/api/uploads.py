"""The size limit on request bodies (GPUSHOP_MAX_UPLOAD_BYTES): a Content-Length above it is
refused before a byte is read, and a body that grows past it while it streams (chunked, or a
lying header) is cut off there: 413 ``too_large``, nothing kept."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpushop.api.errors import error


class BodyTooLarge(HTTPException):
    """An HTTPException: FastAPI's body parsing passes those on (others become a vague 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _message(max_bytes))


def _message(max_bytes: int) -> str:
    return (
        f"the request body is larger than the service accepts ({max_bytes} bytes;"
        " GPUSHOP_MAX_UPLOAD_BYTES)"
    )


class UploadLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, tracking)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error(413, "too_large", _message(self.max_bytes))
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
