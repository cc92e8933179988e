"""The stream's opening, unnamed SSE frames and batched WebSocket messages, live."""

from __future__ import annotations

import asyncio
import json

import httpx
import redis
import websockets

from tests.support.event_api import EVENTS, publish, sse, ws_url


async def test_a_filtered_stream_opens_with_retry_and_the_cursor_before_any_event(
    api: str, redis_client: redis.Redis
) -> None:
    ids = await publish(api, 3)
    async with httpx.AsyncClient(base_url=api, timeout=10) as client:
        async with client.stream("GET", "/events/stream?last_id=$&types=other.*") as response:
            first = await anext(response.aiter_raw())
    assert first == f"retry: 1000\nid: {ids[-1]}\n\n".encode()


async def test_a_resumed_stream_opens_at_the_resume_id(api: str) -> None:
    ids = await publish(api, 3)
    async with sse(api, headers={"Last-Event-ID": ids[0]}) as reader:
        assert [message.id for message in await reader.take(2)] == ids[1:]
        assert reader.retry_ms == 1000
    async with httpx.AsyncClient(base_url=api, timeout=10) as client:
        async with client.stream("GET", f"/events/stream?last_id={ids[1]}") as response:
            first = await anext(response.aiter_raw())
    assert first.startswith(f"retry: 1000\nid: {ids[1]}\n\n".encode())


async def test_unnamed_frames_reach_one_onmessage_with_the_type_in_data(api: str) -> None:
    async with sse(api, "?last_id=$&unnamed=1") as reader:
        await asyncio.sleep(0.3)
        ids = await publish(api, 1, "first.kind") + await publish(api, 1, "second.kind")
        received = await reader.take(2)
    assert [message.event for message in received] == ["message", "message"]
    assert [message.id for message in received] == ids
    assert [message.json()["type"] for message in received] == ["first.kind", "second.kind"]
    assert received[0].json()["n"] == 0


async def test_batched_websocket_gets_arrays_holding_every_event_in_order(
    api: str, redis_client: redis.Redis
) -> None:
    async with websockets.connect(ws_url(api, "?last_id=$&batch=1")) as connection:
        await asyncio.sleep(0.3)
        # One pipeline, so the hub reads the burst at once and hands it over together.
        pipeline = redis_client.pipeline()
        for index in range(50):
            pipeline.xadd(EVENTS, {"type": "burst.event", "data": json.dumps({"n": index})})
        burst = pipeline.execute()
        messages: list[list[dict[str, object]]] = []
        while sum(len(message) for message in messages) < len(burst):
            messages.append(json.loads(await asyncio.wait_for(connection.recv(), 10)))
    assert all(isinstance(message, list) for message in messages)
    assert [event["id"] for message in messages for event in message] == burst
    assert len(messages) < len(burst)
    assert messages[0][0]["type"] == "burst.event" and messages[0][0]["data"] == {"n": 0}


async def test_batched_websocket_gets_notices_as_arrays_too(
    api: str, redis_client: redis.Redis
) -> None:
    ids = await publish(api, 10)
    redis_client.xtrim(EVENTS, maxlen=5, approximate=False)
    async with websockets.connect(ws_url(api, f"?last_id={ids[1]}&batch=1")) as connection:
        [gap] = json.loads(await asyncio.wait_for(connection.recv(), 10))
        rest = json.loads(await asyncio.wait_for(connection.recv(), 10))
    assert gap["type"] == "notice" and gap["notice"] == "gap" and gap["first_id"] == ids[5]
    assert [event["id"] for event in rest] == ids[5:]


async def test_an_idle_filtered_client_is_told_a_newer_id_once_the_stream_moves_past_it(
    api: str, redis_client: redis.Redis
) -> None:
    opening = await publish(api, 1)
    async with sse(api, "?last_id=$&types=other.*") as reader:
        await asyncio.sleep(0.3)
        passed_over = await publish(api, 3)
        # Keepalives come every second here: the id-only message comes with one, once.
        await asyncio.sleep(2.5)
        wanted = await publish(api, 1, "other.thing")
        assert [message.id for message in await reader.take(1)] == wanted
    assert reader.ids == [opening[0], passed_over[-1], wanted[0]]
