"""Which browser origins may use the API: the CORS middleware and the WebSocket Origin check.

Browsers apply CORS to fetch and EventSource but not to WebSocket: a page on any origin may
open a socket, and the browser sends its Origin for the server to judge. So the same list
(``SHIELD_CORS_ORIGINS``) feeds Starlette's CORSMiddleware for HTTP and
``refuse_foreign_origin`` for the socket. An empty list means same-origin only; a request with
no Origin header is not from a browser page and is left to the bearer token.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from service.api.auth import deny_websocket

ANY_ORIGIN = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}
# What a cross-origin page needs: the token, JSON bodies, and resuming a stream by hand.
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Last-Event-ID"]
# Lets a page honour a 429 or 503 as the API asks it to.
EXPOSED_HEADERS = ["Retry-After"]
PREFLIGHT_MAX_AGE_S = 600


def _address(authority: str, scheme: str) -> tuple[str, int] | None:
    """(host, port) of a Host header or an origin's authority, with the scheme's default port."""
    try:
        parts = urlsplit(f"//{authority}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None:
        return None
    return parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]


def is_same_origin(origin: str, host: str | None) -> bool:
    """True when the Origin header names the host and port the request was sent to."""
    scheme, separator, authority = origin.partition("://")
    scheme = scheme.lower()
    if host is None or not separator or scheme not in DEFAULT_PORTS:
        return False
    ours = _address(host, scheme)
    return ours is not None and _address(authority, scheme) == ours


def origin_allowed(headers: Mapping[str, str], allowed: Collection[str]) -> bool:
    """Whether a handshake's Origin may use the API: absent, listed, or our own."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if ANY_ORIGIN in allowed or origin in allowed:
        return True
    return is_same_origin(origin, headers.get("host"))


async def refuse_foreign_origin(websocket: WebSocket, allowed: Collection[str]) -> bool:
    """Refuse the handshake with 403 when its Origin is not allowed; True if it was refused."""
    if origin_allowed(websocket.headers, allowed):
        return False
    denial = JSONResponse({"detail": "origin not allowed"}, status_code=403)
    await deny_websocket(websocket.scope, websocket.receive, websocket.send, denial)
    return True


def add_cors(app: Starlette, allowed: Collection[str]) -> None:
    """Answer preflights and label responses for the listed origins; none listed, no CORS.

    Added last, so it wraps the auth and body-size middlewares: a preflight carries no token
    and must be answered before auth sees it, and a 401 or 413 must carry the CORS headers
    for the page to read it. Bearer tokens, not cookies, so no credentials mode.
    """
    if not allowed:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(allowed),
        allow_methods=["GET", "POST"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
