"""The live API's event endpoints as tests use them: publish over HTTP, read SSE, the WS URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.support.clients import SseReader

EVENTS = "shield:events"  # the stream POST /events writes to


@asynccontextmanager
async def sse(
    base_url: str, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    """GET /events/stream<query>; checks it is a 200 event stream and yields its reader."""
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, read=30)) as client:
        async with client.stream(
            "GET", f"/events/stream{query}", headers=headers or {}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            yield SseReader(response)


def ws_url(base_url: str, query: str = "") -> str:
    """The /events/ws URL of an API at base_url."""
    return base_url.replace("http://", "ws://") + "/events/ws" + query


async def publish(
    base_url: str, count: int, event_type: str = "test.event", job_id: str = ""
) -> list[str]:
    """POST count events with data {"n": index}; returns their entry ids in order."""
    ids = []
    async with httpx.AsyncClient(base_url=base_url) as client:
        for index in range(count):
            body = {"type": event_type, "job_id": job_id, "data": {"n": index}}
            reply = await client.post("/events", json=body)
            assert reply.status_code == 201, reply.text
            ids.append(reply.json()["id"])
    return ids
