"""Stream clients that present a token the way browsers must: ``?access_token=``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import httpx

from tests.support.clients import SseReader


@asynccontextmanager
async def sse_as(
    base_url: str, token: str, params: Mapping[str, str] | None = None
) -> AsyncIterator[SseReader]:
    """/events/stream with the token in the query; asserts it opened."""
    query = {"last_id": "$", **(params or {}), "access_token": token}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        async with client.stream("GET", "/events/stream", params=query) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            yield SseReader(response)


def ws_url_as(base_url: str, token: str, **params: str) -> str:
    """The /events/ws URL with the token and these parameters (last_id=$ by default)."""
    query = urlencode({"last_id": "$", **params, "access_token": token})
    return f"{base_url.replace('http://', 'ws://')}/events/ws?{query}"
