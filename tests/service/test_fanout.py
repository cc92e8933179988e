"""Live fan-out over SSE and WebSocket against a real uvicorn and redis-server."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import redis
import websockets

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tests.support.clients import ws_take
from tests.support.event_api import EVENTS, publish, sse, ws_url
from tests.support.handshakes import websocket_handshake_status
from tests.support.live_server import serve
from tests.support.service_settings import make_settings


async def test_every_sse_and_ws_client_gets_every_event(api: str) -> None:
    async with sse(api, "?last_id=$") as first, sse(api, "?last_id=$") as second:
        async with (
            websockets.connect(ws_url(api, "?last_id=$")) as ws_one,
            websockets.connect(ws_url(api, "?last_id=$")) as ws_two,
        ):
            await asyncio.sleep(0.3)
            ids = await publish(api, 25)
            for reader in (first, second):
                received = await reader.take(25)
                assert [message.id for message in received] == ids
                assert [message.json()["n"] for message in received] == list(range(25))
                assert {message.event for message in received} == {"test.event"}
            for connection in (ws_one, ws_two):
                received_ws = await ws_take(connection, 25)
                assert [message["id"] for message in received_ws] == ids
                assert received_ws[0]["data"] == {"n": 0}
                assert set(received_ws[0]) == {
                    "id",
                    "type",
                    "event_id",
                    "job_id",
                    "timestamp",
                    "data",
                    "metadata",
                }


async def test_sse_message_carries_event_id_job_and_timestamp(api: str) -> None:
    async with sse(api, "?last_id=$") as reader:
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=api) as client:
            reply = await client.post(
                "/events", json={"type": "query.completed", "job_id": "j-7", "data": {"rows": 3}}
            )
        created = reply.json()
        message = await reader.next()
        assert message.event == "query.completed"
        assert message.id == created["id"]
        payload = message.json()
        assert payload["event_id"] == created["event_id"]
        assert payload["job_id"] == "j-7"
        assert payload["rows"] == 3
        assert payload["timestamp"].endswith("+00:00")


async def test_default_resume_point_replays_everything_retained(api: str) -> None:
    ids = await publish(api, 5)
    async with sse(api) as reader:
        assert [message.id for message in await reader.take(5)] == ids


async def test_replay_is_strictly_after_the_given_id(api: str) -> None:
    ids = await publish(api, 6)
    async with sse(api, f"?last_id={ids[2]}") as reader:
        assert [message.id for message in await reader.take(3)] == ids[3:]
    async with websockets.connect(ws_url(api, f"?last_id={ids[4]}")) as connection:
        assert [message["id"] for message in await ws_take(connection, 1)] == ids[5:]


async def test_dollar_means_only_new_events(api: str) -> None:
    await publish(api, 3)
    async with sse(api, "?last_id=$") as reader:
        await asyncio.sleep(0.2)
        new_ids = await publish(api, 2)
        assert [message.id for message in await reader.take(2)] == new_ids


async def test_resume_from_last_event_id_while_events_keep_arriving(api: str) -> None:
    total = 300
    producer = asyncio.create_task(publish(api, total))
    seen: list[str] = []
    last_id = "0"
    while len(seen) < total:
        async with sse(api, headers={"Last-Event-ID": last_id}) as reader:
            for message in await reader.take(min(37, total - len(seen)), timeout_s=20):
                seen.append(message.id or "")
        last_id = seen[-1]
    ids = await producer
    assert seen == ids


async def test_filters_by_type_prefix_and_job(api: str) -> None:
    async with sse(api, "?last_id=$&types=ingestion.*,query.completed&job_id=j1") as reader:
        async with websockets.connect(ws_url(api, "?last_id=$&types=ingestion.*")) as connection:
            await asyncio.sleep(0.2)
            await publish(api, 1, "ingestion.progress", "j2")
            await publish(api, 1, "other.event", "j1")
            wanted_one = await publish(api, 1, "ingestion.progress", "j1")
            wanted_two = await publish(api, 1, "query.completed", "j1")
            received = await reader.take(2)
            assert [message.id for message in received] == wanted_one + wanted_two
            via_ws = await ws_take(connection, 2)
            assert [message["type"] for message in via_ws] == ["ingestion.progress"] * 2


async def test_invalid_resume_id_is_a_400_before_the_stream(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        reply = await client.get("/events/stream", params={"last_id": "not-an-id"})
        assert reply.status_code == 400
        assert "invalid stream id" in reply.json()["detail"]
        reply = await client.get("/events/stream", headers={"Last-Event-ID": "12-x"})
        assert reply.status_code == 400
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url(api, "?last_id=bad")):
            pass
    assert refused.value.response.status_code == 400


async def test_keepalive_comment_is_sent(api: str) -> None:
    async with sse(api, "?last_id=$") as reader:
        with pytest.raises(TimeoutError):
            await reader.next(timeout_s=2.5)
        assert reader.comments, "no keepalive comment within 2.5 s at a 1 s ping interval"


async def test_slow_client_is_dropped_with_an_error_and_can_resume(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_server, client_buffer_events=5)
    with serve(settings) as base_url:
        async with sse(base_url, "?last_id=$") as reader:
            first = await publish(base_url, 1)
            await reader.next()
            # Publish directly in one burst while this client reads nothing.
            pipeline = redis_client.pipeline()
            for index in range(50):
                pipeline.xadd(EVENTS, {"type": "burst.event", "data": json.dumps({"n": index})})
            burst_ids = pipeline.execute()
            received = []
            while True:
                message = await reader.next()
                if message.event == "notice":
                    break
                received.append(message.id)
            error = message.json()
            assert error["notice"] == "slow_client" and "too slow" in error["message"]
            assert message.id == error["resume_from"]
            assert error["resume_from"] == (received[-1] if received else first[0])
        assert received == burst_ids[: len(received)]
        async with sse(base_url, f"?last_id={error['resume_from']}") as resumed:
            rest = await resumed.take(len(burst_ids) - len(received))
            assert received + [message.id for message in rest] == burst_ids


async def test_one_reader_serves_all_clients(api: str, redis_client: redis.Redis) -> None:
    """Adding clients must not add Redis reads: count XREAD calls with 1 and with 8 clients."""

    async def xreads_while_streaming(client_count: int) -> int:
        redis_client.config_resetstat()
        async with asyncio.TaskGroup() as group:
            readers = [group.create_task(_read_n(api, 20)) for _ in range(client_count)]
            # Every client connected (its cursor taken) before anything is published, however
            # slow the machine: not a fixed sleep.
            await _until_connected(api, client_count)
            await publish(api, 20)
        assert all(len(task.result()) == 20 for task in readers)
        stats = redis_client.info("commandstats")
        return int(stats.get("cmdstat_xread", {}).get("calls", 0))

    with_one = await xreads_while_streaming(1)
    with_eight = await xreads_while_streaming(8)
    assert with_eight <= with_one + 3, (with_one, with_eight)


async def _until_connected(base_url: str, clients: int, timeout_s: float = 15.0) -> None:
    """Wait until the API counts `clients` live SSE clients on /metrics."""
    line = f'shield_connected_clients{{transport="sse"}} {float(clients)}'
    async with httpx.AsyncClient(base_url=base_url) as client:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while line not in (await client.get("/metrics")).text:
            assert asyncio.get_running_loop().time() < deadline, (
                f"{clients} clients never connected"
            )
            await asyncio.sleep(0.05)


async def _read_n(base_url: str, count: int) -> list[str]:
    async with sse(base_url, "?last_id=$") as reader:
        return [message.id or "" for message in await reader.take(count)]


def test_a_websocket_client_that_vanishes_is_let_go(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Clients that drop the TCP connection right after the handshake, with no close frame,
    are let go: none is still counted, and the server's shutdown waits for none of them."""
    with serve(make_settings(redis_server)) as base_url:
        host = base_url.removeprefix("http://")
        for _ in range(3):
            assert websocket_handshake_status(base_url, "/events/ws", host, None) == 101
        gone = 'shield_connected_clients{transport="ws"} 0.0'
        wait_until(lambda: gone in httpx.get(f"{base_url}/metrics").text, 5)
        shutdown_began = time.monotonic()
    assert time.monotonic() - shutdown_began < 2
