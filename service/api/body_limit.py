"""Request body size limit: 413 for bodies over SHIELD_MAX_EVENT_BYTES (POST /jobs:
SHIELD_MAX_JOB_BYTES, a whole document), before any parsing."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Reads at most max_bytes of a request body, then hands the app the buffered body."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_bytes_by_route: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self._app = app
        self._default_max_bytes = max_bytes
        self._by_route = dict(max_bytes_by_route or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self._app(scope, receive, send)
            return
        max_bytes = self._by_route.get(
            (scope["method"], scope.get("path", "")), self._default_max_bytes
        )
        if self._declared_length(scope) > max_bytes:
            await self._reject(scope, receive, send, max_bytes)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                await self._reject(scope, receive, send, max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        response = JSONResponse({"detail": f"request body over {max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)
