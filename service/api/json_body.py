"""415 for a JSON route's request whose Content-Type is not application/json.

A web page on any origin may POST ``text/plain`` without a preflight (a "simple" request);
``application/json`` always needs one, which CORS then answers. So refusing any other type
keeps cross-site pages from starting runs or writing events, whatever the body holds.
Which routes take JSON is their rule in service.api.route_rules.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.route_rules import rule_for

JSON_MEDIA_TYPE = "application/json"


def is_json(content_type: str | None) -> bool:
    """True for ``application/json``, with any parameters (``; charset=utf-8``)."""
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON_MEDIA_TYPE


def _content_type(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return str(value.decode("latin-1"))
    return None


class JsonBodyOnly:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            rule = rule_for(scope["method"], scope.get("path", ""))
            if rule is not None and rule.json_body and not is_json(_content_type(scope)):
                refusal = JSONResponse(
                    {"detail": f"Content-Type must be {JSON_MEDIA_TYPE}"}, status_code=415
                )
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)
