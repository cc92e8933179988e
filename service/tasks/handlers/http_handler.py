"""``http:<url>``: POST each task as JSON to your service, and let its answer decide.

The body is the payload a Python handler gets. ``Idempotency-Key`` is the same for every
attempt at one task, so the receiver can tell a retry from new work; SHIELD_HANDLER_TOKEN, if
set, goes as ``Authorization: Bearer``. http_semantics says what each status means.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from service.tasks.handlers.context import HandlerContext
from service.tasks.handlers.http_semantics import FailedAttempt, check_status


def shown_url(url: str) -> str:
    """The URL as errors and logs may show it: no credentials, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


async def send(
    client: httpx.AsyncClient, service: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One request, with timeouts and connection errors raised as FailedAttempt."""
    try:
        return await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise FailedAttempt(f"{service} did not answer in time ({shown_url(url)})") from None
    except httpx.HTTPError as error:
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise FailedAttempt(f"cannot reach {service} at {shown_url(url)}: {detail}") from None


class HttpHandler:
    """Posts each task to one URL."""

    def __init__(self, url: str, client: httpx.AsyncClient, token: str | None) -> None:
        self._url = url
        self._client = client
        self._token = token
        self._service = f"the handler at {shown_url(url)}"

    async def __call__(self, payload: Mapping[str, Any], context: HandlerContext) -> None:
        headers = {"Idempotency-Key": context.idempotency_key}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        response = await send(
            self._client, self._service, "POST", self._url, json=dict(payload), headers=headers
        )
        check_status(
            self._service,
            response.status_code,
            response.headers.get("Retry-After"),
            response.text,
            datetime.now(UTC),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
