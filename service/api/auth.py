"""Bearer-token auth and scopes for every route but the health checks, as pure ASGI middleware.

Middleware rather than a route dependency, so nothing added later (docs, metrics) can be
left open by forgetting it: a route needs the scopes its rule in service.api.route_rules
names, and admin when it has none. SSE and WebSocket clients may pass ``?access_token=``
because browsers cannot set headers on EventSource or WebSocket.

A credential is the static ``SHIELD_API_TOKEN`` (an admin) or a scoped JWT
(service.core.tokens); the resulting Grant is put in the ASGI scope for the routes, which
hold a limited token to its jobs and event types. A bad credential is a 401, a missing
scope a 403. ``/health/detailed`` takes a token but needs none: without one it says only
up, degraded or down.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.route_rules import WEBSOCKET, required_scopes
from service.core.grants import ADMIN, AccessDenied, Grant
from service.core.tokens import TokenAuthority, TokenRefused

log = logging.getLogger(__name__)

# The dashboard page and its assets are static: the data calls it makes carry the token.
OPEN_PATHS = frozenset({"/health", "/", "/dashboard"})
OPEN_PREFIX = "/dashboard/"
# A token here is read when given (it unlocks the details), never required.
OPTIONAL_TOKEN_PATHS = frozenset({"/health/detailed"})
QUERY_TOKEN_PATHS = frozenset({"/events/stream", "/events/ws"})
# Where the middleware leaves the caller's Grant for the routes.
GRANT_KEY = "shield.grant"


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


class Credentials:
    """Turns a presented token into a Grant: the static token is admin, a JWT its claims."""

    def __init__(self, static_token: str | None, authority: TokenAuthority | None) -> None:
        self._static = static_token.encode() if static_token else None
        self._authority = authority

    def grant_of(self, presented: str) -> Grant:
        """The presented token's grant; TokenRefused when it is none of ours."""
        if self._static is not None and hmac.compare_digest(presented.encode(), self._static):
            return ADMIN
        if self._authority is None:
            raise TokenRefused("not the API token")
        return self._authority.verify(presented)


def _denial(status: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class BearerAuth:
    """Refuses a request without a valid token (401) or without its route's scopes (403).

    With ``credentials`` None (no token of any kind configured) every caller is admin.
    """

    def __init__(self, app: ASGIApp, credentials: Credentials | None) -> None:
        self._app = app
        self._credentials = credentials

    def _judge(self, scope: Scope) -> JSONResponse | None:
        """None to let the request through (with its grant set), else the refusal."""
        path = scope.get("path", "")
        if self._credentials is None:
            scope[GRANT_KEY] = ADMIN
            return None
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            return None
        presented = bearer_token(scope.get("headers", []))
        if presented is None and path in QUERY_TOKEN_PATHS:
            presented = query_token(scope.get("query_string", b""))
        if presented is None:
            if path in OPTIONAL_TOKEN_PATHS:
                return None
            return _denial(401, "missing or invalid bearer token")
        try:
            grant = self._credentials.grant_of(presented)
        except TokenRefused as refused:
            # Debug only: anyone can send bad tokens, as many as they like.
            log.debug("token refused on %s: %s", path, refused)
            return _denial(401, "missing or invalid bearer token")
        if path not in OPTIONAL_TOKEN_PATHS:
            method = WEBSOCKET if scope["type"] == "websocket" else scope.get("method", "GET")
            missing = [name for name in required_scopes(method, path) if not grant.has(name)]
            if missing:
                return _denial(403, f"this token lacks the scope {' '.join(missing)}")
        scope[GRANT_KEY] = grant
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        denial = self._judge(scope)
        if denial is None:
            await self._app(scope, receive, send)
        elif scope["type"] == "http":
            await denial(scope, receive, send)
        else:
            await deny_websocket(scope, receive, send, denial)


def current_grant(connection: HTTPConnection) -> Grant:
    """The caller's grant, set by BearerAuth; a request it did not judge gets nothing."""
    grant = connection.scope.get(GRANT_KEY)
    if not isinstance(grant, Grant):
        raise AccessDenied("no credential was checked for this route")
    return grant


def optional_grant(connection: HTTPConnection) -> Grant | None:
    """The caller's grant, or None for a request that came without a token."""
    grant = connection.scope.get(GRANT_KEY)
    return grant if isinstance(grant, Grant) else None


CurrentGrant = Annotated[Grant, Depends(current_grant)]
OptionalGrant = Annotated[Grant | None, Depends(optional_grant)]


async def deny_websocket(scope: Scope, receive: Receive, send: Send, denial: JSONResponse) -> None:
    """Refuse a WebSocket handshake with an HTTP response, or a policy close where unsupported."""
    await receive()  # the websocket.connect message
    if "websocket.http.response" in scope.get("extensions", {}):
        await denial(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008})


# What a secret looks like in a log line, whether or not it is one of ours. The query name in
# any case and with any character percent-encoded (``ACCESS_TOKEN``, ``access%5Ftoken``):
# parse_qs decodes the name before the auth reads it.
def _any_spelling(name: str) -> str:
    def one(char: str) -> str:
        codes = {f"%{ord(variant):02x}" for variant in (char.lower(), char.upper())}
        return "(?:" + "|".join([re.escape(char)] + sorted(codes)) + ")"

    return "".join(one(char) for char in name)


_QUERY_TOKEN = re.compile(f"({_any_spelling('access_token')}=)[^&\\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',]+", re.IGNORECASE)
# A JWT: base64url of '{"' (eyJ), then the payload and a signature, which may be empty.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_ANY_SECRET = re.compile(f"{_QUERY_TOKEN.pattern}|{_BEARER.pattern}|{_JWT.pattern}", re.IGNORECASE)
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
    text = _JWT.sub("***", _BEARER.sub(_MASK, _QUERY_TOKEN.sub(_MASK, text)))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _holds_secret(text: str, secrets: Collection[str]) -> bool:
    return _ANY_SECRET.search(text) is not None or any(secret in text for secret in secrets)


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


def redact_logs(*secrets: str | None) -> None:
    """Mask these secrets (and any query token, bearer credential or JWT) in every record."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, RedactingRecordFactory):
        factory = RedactingRecordFactory(factory)
        logging.setLogRecordFactory(factory)
    factory.secrets.update(secret for secret in secrets if secret)
