"""Redis (AOF on) restarts while events flow to several SSE clients: the service recovers by
itself and every client, resuming from its last id, ends with every event, in order, once."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis

from harness.redis_server import RedisServer
from tests.support.clients import follow_sse

pytestmark = pytest.mark.slow

CLIENTS = 5
EVENTS = 600
RATE_PER_S = 150


async def _publish(base_url: str, stop_at: int) -> list[str]:
    """POST events at a steady rate, retrying through the outage; returns acknowledged ids."""
    acknowledged: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        index = 0
        while index < stop_at:
            try:
                reply = await client.post(
                    "/events", json={"type": "fault.tick", "data": {"n": index}}
                )
            except httpx.HTTPError:
                reply = None
            if reply is not None and reply.status_code == 201:
                acknowledged.append(reply.json()["id"])
                index += 1
            elif reply is not None:
                assert reply.status_code == 503, reply.text
            await asyncio.sleep(1 / RATE_PER_S)
    return acknowledged


async def test_redis_restart_with_aof_mid_stream(
    api: str, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    finished = asyncio.Event()
    streams: list[list[str]] = [[] for _ in range(CLIENTS)]
    errors: list[list[str]] = [[] for _ in range(CLIENTS)]
    followers = [
        asyncio.create_task(
            follow_sse(api, {"types": "fault.tick"}, streams[i], errors[i], finished.is_set)
        )
        for i in range(CLIENTS)
    ]
    publisher = asyncio.create_task(_publish(api, EVENTS))
    await asyncio.sleep(1.5)
    await asyncio.to_thread(redis_server.restart, 1.0)
    acknowledged = await asyncio.wait_for(publisher, 120)
    stored = [
        entry_id
        for entry_id, fields in redis_client.xrange("shield:events")
        if fields["type"] == "fault.tick"
    ]
    deadline = time.monotonic() + 30
    while any(len(received) < len(stored) for received in streams) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    finished.set()
    await asyncio.wait_for(asyncio.gather(*followers), 30)
    assert set(acknowledged) <= set(stored)
    for received, seen_errors in zip(streams, errors, strict=True):
        assert received == stored
        assert any("redis unavailable" in error for error in seen_errors), seen_errors
