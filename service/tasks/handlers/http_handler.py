"""``http:<url>``: POST each task as JSON to your service, and let its answer decide.

The body is the payload a Python handler gets. ``Idempotency-Key`` is the same for every
attempt at one task, so the receiver can tell a retry from new work; SHIELD_HANDLER_TOKEN, if
set, goes as ``Authorization: Bearer``; a traced task's ``traceparent`` names the attempt.
http_semantics says what each status means.

Secrets stay out of what the worker shows: credentials in the URL are sent as Basic auth (so
no logged URL carries them), reasons show the URL without credentials or query, and the token
and password are cut out of any body a reason quotes. httpx logs every request's full URL at
INFO, query included, so its logger is held at WARNING once a handler talks HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from service.core.trace_context import TRACEPARENT_HEADER
from service.tasks.handlers.context import HandlerContext
from service.tasks.handlers.http_semantics import (
    FailedAttempt,
    check_status,
    shown_url,
    split_credentials,
)

__all__ = ["HttpHandler", "quiet_httpx_log", "send", "shown_url"]


def quiet_httpx_log() -> None:
    """Keep httpx's per-request INFO line (the full URL, query and all) out of the log."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def send(
    client: httpx.AsyncClient, service: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One request, with timeouts and connection errors raised as FailedAttempt."""
    try:
        return await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise FailedAttempt(f"{service} did not answer in time") from None
    except httpx.HTTPError as error:
        raise FailedAttempt(f"cannot reach {service}: {describe_transport_error(error)}") from None


def describe_transport_error(error: httpx.HTTPError) -> str:
    """The error's type and message; httpx's messages name no URL."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class HttpHandler:
    """Posts each task to one URL."""

    # Cancelling the call stops waiting for the service.
    interruptible = True

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        token: str | None,
        timeout_s: float | None = None,
    ) -> None:
        self._url, credentials = split_credentials(url)
        self._auth = httpx.BasicAuth(*credentials) if credentials and not token else None
        self._client = client
        self._token = token
        self._timeout_s = timeout_s
        self._secrets = tuple(filter(None, (token, credentials[1] if credentials else None)))
        self._service = f"the handler at {shown_url(url)}"
        quiet_httpx_log()

    async def __call__(self, payload: Mapping[str, Any], context: HandlerContext) -> None:
        headers = {"Idempotency-Key": context.idempotency_key}
        if context.traceparent:
            headers[TRACEPARENT_HEADER] = context.traceparent
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            # The client's timeout bounds each read; this bounds the whole exchange, so a
            # service that trickles its answer cannot hold the task past the setting.
            async with asyncio.timeout(self._timeout_s):
                response = await send(
                    self._client,
                    self._service,
                    "POST",
                    self._url,
                    json=dict(payload),
                    headers=headers,
                    auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                )
        except TimeoutError:
            raise FailedAttempt(f"{self._service} did not answer in time") from None
        check_status(
            self._service,
            response.status_code,
            response.headers.get("Retry-After"),
            response.text,
            datetime.now(UTC),
            self._secrets,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
