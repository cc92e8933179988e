"""Which browser origins may use the API: the CORS middleware and the WebSocket Origin check.

Browsers apply CORS to fetch and EventSource but not to WebSocket: a page on any origin may
open a socket, and the browser sends its Origin for the server to judge. So the same list
(``SHIELD_CORS_ORIGINS``) feeds Starlette's CORSMiddleware for HTTP and
``refuse_foreign_origin`` for the socket. An empty list means same-origin only; a request with
no Origin header is not from a browser page and is left to the bearer token.

"Same origin" is judged against the names the API is known by (``SHIELD_SERVER_NAMES``), never
against the request's Host header alone: with DNS rebinding, a hostile page's own name resolves
to this API, so its Origin and the Host it sends agree. With no names configured, only a
loopback Origin (localhost, 127.0.0.0/8, ::1) that matches Host is our own: no DNS answer can
give a page such an origin, so the local dashboard works and a rebinding page does not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from service.api.auth import deny_websocket
from service.core.server_names import is_loopback_host, split_authority

ANY_ORIGIN = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}
# What a cross-origin page needs: the token, JSON bodies, resuming a stream by hand, and
# retrying a write safely.
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Last-Event-ID", "Idempotency-Key"]
# Lets a page honour a 429 or 503 as the API asks it to, and tell a replayed answer.
EXPOSED_HEADERS = ["Retry-After", "Idempotent-Replayed"]
PREFLIGHT_MAX_AGE_S = 600


def _address(authority: str, scheme: str) -> tuple[str, int] | None:
    """(host, port) of a Host header or an origin's authority, with the scheme's default port."""
    address = split_authority(authority)
    if address is None:
        return None
    host, port = address
    return host, port if port is not None else DEFAULT_PORTS[scheme]


def _origin_address(origin: str) -> tuple[str, tuple[str, int]] | None:
    """(scheme, (host, port)) of an Origin header, or None when it is no http(s) origin."""
    scheme, separator, authority = origin.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        return None
    address = _address(authority, scheme)
    return None if address is None else (scheme, address)


def is_same_origin(origin: str, host: str | None) -> bool:
    """True when the Origin header names the host and port the request was sent to."""
    parsed = _origin_address(origin)
    if host is None or parsed is None:
        return False
    scheme, address = parsed
    return _address(host, scheme) == address


def is_server_name(origin: str, server_names: Collection[str]) -> bool:
    """True when the Origin is one of ours: a bare host stands for the scheme's default port."""
    parsed = _origin_address(origin)
    if parsed is None:
        return False
    scheme, address = parsed
    return any(_address(name, scheme) == address for name in server_names)


def is_own_origin(origin: str, host: str | None, server_names: Collection[str]) -> bool:
    """Same-origin by the configured names; with none, only a loopback origin matching Host."""
    if server_names:
        return is_server_name(origin, server_names)
    parsed = _origin_address(origin)
    return parsed is not None and is_loopback_host(parsed[1][0]) and is_same_origin(origin, host)


def origin_allowed(
    headers: Mapping[str, str], allowed: Collection[str], server_names: Collection[str] = ()
) -> bool:
    """Whether a handshake's Origin may use the API: absent, listed, or our own."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if ANY_ORIGIN in allowed or origin in allowed:
        return True
    return is_own_origin(origin, headers.get("host"), server_names)


async def refuse_foreign_origin(
    websocket: WebSocket, allowed: Collection[str], server_names: Collection[str]
) -> bool:
    """Refuse the handshake with 403 when its Origin is not allowed; True if it was refused."""
    if origin_allowed(websocket.headers, allowed, server_names):
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
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
