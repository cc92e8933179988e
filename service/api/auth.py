"""Bearer-token auth for every route but the health checks, as pure ASGI middleware.

Middleware rather than a route dependency, so nothing added later (docs, metrics) can be
left open by forgetting it. SSE and WebSocket clients may pass ``?access_token=`` because
browsers cannot set headers on EventSource or WebSocket.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any
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


# What a secret looks like in a log line, whether or not it is the configured token.
_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s\"']*")
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',]+")
_MASK = r"\1***"


class RedactingRecordFactory:
    """Wraps logging's record factory so that every record is redacted as it is created.

    uvicorn logs the request target with ?access_token= through ``uvicorn.access`` and, for
    WebSocket handshakes, through ``uvicorn.error``; a library may log it anywhere else.
    Filters sit on one logger or one handler and miss records that reach others (and
    uvicorn replaces its handlers when it configures logging), so redaction happens where
    every record is born: whatever logger or handler it reaches later, it holds no secret.
    """

    def __init__(self, wrapped: Callable[..., logging.LogRecord]) -> None:
        self._wrapped = wrapped
        self.secrets: set[str] = set()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self._wrapped(*args, **kwargs)
        redact_record(record, self.secrets)
        return record


def redact(text: str, secrets: Collection[str] = ()) -> str:
    """Text with query tokens, bearer credentials and the given secrets masked."""
    text = _BEARER.sub(_MASK, _QUERY_TOKEN.sub(_MASK, text))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _holds_secret(text: str, secrets: Collection[str]) -> bool:
    return "access_token=" in text or "Bearer" in text or any(secret in text for secret in secrets)


def _redact_arg(arg: object, secrets: Collection[str]) -> object:
    if isinstance(arg, str):
        return redact(arg, secrets)
    if isinstance(arg, int | float) or arg is None:
        return arg
    text = str(arg)
    return redact(text, secrets) if _holds_secret(text, secrets) else arg


def redact_record(record: logging.LogRecord, secrets: Collection[str]) -> None:
    """Mask secrets in a record's message and arguments, keeping their shape.

    uvicorn's access formatter unpacks the arguments, so they stay a tuple of the same length.
    """
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):
        return  # logging reports the bad format itself when a handler formats it
    if not _holds_secret(message, secrets):
        return
    if isinstance(record.msg, str):
        record.msg = redact(record.msg, secrets)
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_arg(arg, secrets) for arg in record.args)
    elif isinstance(record.args, Mapping):
        record.args = {key: _redact_arg(value, secrets) for key, value in record.args.items()}
    try:
        redacted = record.getMessage()
    except (TypeError, ValueError, KeyError):
        redacted = message
    if any(secret in redacted for secret in secrets):
        # A secret split across arguments: give up the shape rather than the secret.
        record.msg, record.args = redact(message, secrets), ()


def redact_logs(token: str) -> None:
    """Mask ``token`` (and any query token or bearer credential) in every log record."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, RedactingRecordFactory):
        factory = RedactingRecordFactory(factory)
        logging.setLogRecordFactory(factory)
    if token:
        factory.secrets.add(token)
