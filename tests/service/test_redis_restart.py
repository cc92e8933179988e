"""A Redis restart in the middle of a stream: clear errors while down, recovery without restart."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tests.support.event_api import publish, sse, ws_url


async def _wait_until_up(base_url: str) -> None:
    def up() -> bool:
        return httpx.get(f"{base_url}/health/detailed").status_code == 200

    await asyncio.to_thread(
        wait_until, up, 10, interval_s=0.1, describe="the service to see Redis come back"
    )


async def test_redis_restart_mid_stream(api: str, redis_server: RedisServer) -> None:
    before = await publish(api, 10)
    async with sse(api) as reader, websockets.connect(ws_url(api, "?last_id=0")) as connection:
        assert [message.id for message in await reader.take(10)] == before
        for _ in range(10):
            await asyncio.wait_for(connection.recv(), 10)

        redis_server.stop()
        error = await reader.next()
        assert error.event == "notice" and error.id == before[-1]
        assert error.json()["notice"] == "redis_unavailable"
        assert "redis unavailable" in error.json()["message"]
        assert error.json()["resume_from"] == before[-1]
        ws_error = json.loads(await asyncio.wait_for(connection.recv(), 10))
        assert ws_error["type"] == "notice" and ws_error["notice"] == "redis_unavailable"
        assert ws_error["resume_from"] == before[-1]

        async with httpx.AsyncClient(base_url=api) as client:
            down = await client.post("/events", json={"type": "test.event"})
            assert down.status_code == 503
            assert down.json()["detail"].startswith("redis unavailable")
            task = {"job_id": "j", "chunk_id": "c", "content": "x"}
            assert (await client.post("/tasks", json=task)).status_code == 503
            health = await client.get("/health/detailed")
            assert health.status_code == 503
            assert health.json()["status"] == "down" and health.json()["error"]
            assert (await client.get("/health")).status_code == 200
        # A stream opened meanwhile says why and when to come back, at the id it was given: a
        # browser's EventSource gives up for good on a 503.
        async with sse(api, headers={"Last-Event-ID": before[3]}) as refused:
            notice = await refused.next()
            assert (notice.event, notice.id, refused.retry_ms) == ("notice", before[3], 1000)
            assert notice.json()["notice"] == "redis_unavailable"
            assert notice.json()["resume_from"] == before[3]
            with pytest.raises(EOFError):
                await refused.next()

    redis_server.start()
    await _wait_until_up(api)
    async with sse(api, headers={"Last-Event-ID": error.json()["resume_from"]}) as resumed:
        await asyncio.sleep(0.3)
        after = await publish(api, 10)
        assert [message.id for message in await resumed.take(10)] == after
    async with sse(api) as replay:
        assert [message.id for message in await replay.take(20)] == before + after


async def _post_both(client: httpx.AsyncClient, n: int) -> list[int]:
    task = {"job_id": "j", "chunk_id": f"c{n}", "content": "x"}
    replies = await asyncio.gather(
        client.post("/tasks", json=task), client.post("/events", json={"type": "test.event"})
    )
    return [reply.status_code for reply in replies]


async def test_first_posts_after_a_redis_restart_succeed(
    api: str, redis_server: RedisServer
) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        # Concurrent requests fill the pool with connections that the restart will cut.
        before = await asyncio.gather(*(_post_both(client, n) for n in range(8)))
        assert before == [[201, 201]] * 8
        redis_server.restart()
        first = await _post_both(client, 100)
        after = await asyncio.gather(*(_post_both(client, n) for n in range(8)))
    assert first == [201, 201]
    assert after == [[201, 201]] * 8
