"""Bearer-token auth for every route but the health checks, as pure ASGI middleware.

Middleware rather than a route dependency, so nothing added later (docs, metrics) can be
left open by forgetting it. SSE and WebSocket clients may pass ``?access_token=`` because
browsers cannot set headers on EventSource or WebSocket.
"""

from __future__ import annotations

import hmac
import logging
import re
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# The dashboard page and its assets are static: the data calls it makes carry the token.
OPEN_PATHS = frozenset({"/health", "/health/detailed", "/", "/dashboard"})
OPEN_PREFIX = "/dashboard/"
QUERY_TOKEN_PATHS = frozenset({"/events/stream", "/events/ws"})


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


def query_token(query_string: bytes) -> str | None:
    values = parse_qs(query_string.decode("latin-1")).get("access_token")
    return values[0] if values else None


class BearerAuth:
    """Rejects requests without the configured token with 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token.encode()

    def _allowed(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            return True
        presented = bearer_token(scope.get("headers", []))
        if presented is None and path in QUERY_TOKEN_PATHS:
            presented = query_token(scope.get("query_string", b""))
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self._app(scope, receive, send)
            return
        denial = JSONResponse(
            {"detail": "missing or invalid bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        if scope["type"] == "http":
            await denial(scope, receive, send)
            return
        await deny_websocket(scope, receive, send, denial)


async def deny_websocket(scope: Scope, receive: Receive, send: Send, denial: JSONResponse) -> None:
    """Refuse a WebSocket handshake with an HTTP response, or a policy close where unsupported."""
    await receive()  # the websocket.connect message
    if "websocket.http.response" in scope.get("extensions", {}):
        await denial(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008})


_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s]*")


class RedactQueryToken(logging.Filter):
    """Masks ?access_token= in uvicorn's access log lines, which log the full query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _QUERY_TOKEN.sub(r"\1***", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = _QUERY_TOKEN.sub(r"\1***", record.msg)
        return True


def redact_access_log() -> None:
    """Install the filter once on uvicorn's access logger."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactQueryToken) for existing in access.filters):
        access.addFilter(RedactQueryToken())
