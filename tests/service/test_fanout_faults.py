"""Foreign entries, trimmed history and a failing reader, against a real uvicorn and redis."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import redis
import websockets
from redis.asyncio import Redis as AsyncRedis

from harness.redis_server import RedisServer
from service.events.bus import EventHub, SubscriptionClosed
from service.events.filters import EventFilter
from tests.support.clients import ws_take
from tests.support.event_api import publish, sse, ws_url
from tests.support.live_server import serve
from tests.support.service_settings import make_settings

EVENTS = "shield:events"
BAD_ENTRIES = (
    {"type": "a.b", "data": b"\xff"},
    {"type": b"a.\xfe", "data": "{}"},
    {"type": "a.b", "data": "[" * 100_000},
    {"type": "a.b", "job_id": b"j\xc3", "data": "{}"},
    {"type": "a.b", "data": '{"x": "\\ud800"}'},
)


def _skipped(base_url: str) -> float:
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith("shield_event_entries_skipped_total "):
            return float(line.split()[1])
    raise AssertionError("no skipped-entries counter")


async def test_foreign_entries_are_skipped_and_the_live_feed_goes_on(
    api: str, redis_client: redis.Redis
) -> None:
    async with sse(api, "?last_id=$") as reader:
        async with websockets.connect(ws_url(api, "?last_id=$")) as connection:
            await asyncio.sleep(0.3)
            for fields in BAD_ENTRIES:
                redis_client.xadd(EVENTS, fields)  # type: ignore[arg-type]
            good = await publish(api, 3)
            assert [message.id for message in await reader.take(3)] == good
            assert [message["id"] for message in await ws_take(connection, 3)] == good
    # A client that arrives afterwards still gets live events.
    async with sse(api, "?last_id=$") as late:
        await asyncio.sleep(0.3)
        more = await publish(api, 2)
        assert [message.id for message in await late.take(2)] == more
    assert _skipped(api) >= len(BAD_ENTRIES)
    health = httpx.get(f"{api}/health/detailed").json()
    assert health["status"] == "up" and health["fanout"] == "running"


async def test_replay_across_foreign_entries_skips_them(
    api: str, redis_client: redis.Redis
) -> None:
    before = await publish(api, 2)
    for fields in BAD_ENTRIES:
        redis_client.xadd(EVENTS, fields)  # type: ignore[arg-type]
    after = await publish(api, 2)
    async with sse(api, "?last_id=0") as reader:
        received = await reader.take(4)
        assert [message.id for message in received] == before + after
        assert {message.event for message in received} == {"test.event"}
    async with websockets.connect(ws_url(api, "?last_id=0")) as connection:
        assert [message["id"] for message in await ws_take(connection, 4)] == before + after


async def test_stats_and_health_serve_entries_and_groups_that_are_not_utf8(
    api: str, redis_client: redis.Redis
) -> None:
    redis_client.xadd(EVENTS, {b"\xff\xfe": b"\xc3", "type": "a.b"})
    redis_client.xadd(EVENTS, {"type": "a.b", "data": b"\xff"})
    redis_client.xgroup_create(EVENTS, b"obs\xff", id="0")
    redis_client.xadd("shield:ingestion_queue", {"job_id": "x", "content": b"\xff\xfe"})
    async with httpx.AsyncClient(base_url=api) as client:
        stats = await client.get("/events/stats")
        assert stats.status_code == 200, stats.text
        events = stats.json()["streams"][EVENTS]
        assert events["first_entry_detail"]["fields"] == {"\\xff\\xfe": "\\xc3", "type": "a.b"}
        assert events["last_entry_detail"]["fields"]["data"] == "\\xff"
        assert "obs\\xff" in events["consumer_groups"]
        health = await client.get("/health/detailed")
        assert health.status_code == 200, health.text
        assert "obs\\xff" in health.json()["streams"][EVENTS]["groups"]


async def test_resume_from_trimmed_history_starts_with_a_gap_event(
    api: str, redis_client: redis.Redis
) -> None:
    ids = await publish(api, 10)
    redis_client.xtrim(EVENTS, maxlen=5, approximate=False)
    async with sse(api, headers={"Last-Event-ID": ids[2]}) as reader:
        gap = await reader.next()
        assert gap.event == "notice" and gap.id == ids[2]
        assert gap.json() == {
            "notice": "gap",
            "message": f"history after the resume id was trimmed; the first id held is {ids[5]}",
            "resume_from": ids[2],
            "after": ids[2],
            "first_id": ids[5],
        }
        assert [message.id for message in await reader.take(5)] == ids[5:]
    async with websockets.connect(ws_url(api, f"?last_id={ids[1]}")) as connection:
        first, *rest = await ws_take(connection, 6)
        assert first == {"type": "notice", **gap.json(), "resume_from": ids[1], "after": ids[1]}
        assert [message["id"] for message in rest] == ids[5:]
    # Resuming from an entry still held, or asking for everything, is no gap.
    async with sse(api, f"?last_id={ids[6]}") as reader:
        assert [message.id for message in await reader.take(3)] == ids[7:]
    async with sse(api, "?last_id=0") as reader:
        assert [message.id for message in await reader.take(5)] == ids[5:]


async def test_observer_groups_that_missed_trimmed_entries_are_shown(
    api: str, redis_client: redis.Redis
) -> None:
    await publish(api, 10)
    # power-ui-frontend has no client here (the metrics-collector now reads in every API
    # process); the dashboard read everything before the trim.
    redis_client.xreadgroup("dashboard-frontend", "c", {EVENTS: ">"})
    redis_client.xtrim(EVENTS, maxlen=4, approximate=False)
    ids = [entry_id for entry_id, _ in redis_client.xrange(EVENTS)]
    redis_client.xdel(EVENTS, ids[1])
    async with httpx.AsyncClient(base_url=api) as client:
        stats = (await client.get("/events/stats")).json()["streams"][EVENTS]
    groups = {group["name"]: group for group in stats["groups"]}
    assert groups["power-ui-frontend"]["missed_entries"] is True
    assert groups["dashboard-frontend"]["missed_entries"] is False
    assert groups["dashboard-frontend"]["pending"] == 10
    # After a deletion Redis cannot count the lag of a group that has not read past it.
    assert groups["power-ui-frontend"]["lag"] is None
    assert groups["power-ui-frontend"]["lag_known"] is False
    assert stats["entries_added"] == 10 and stats["length"] == 3


async def test_the_event_stream_keeps_its_maxlen_history(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with serve(make_settings(redis_server, stream_maxlen=100)) as base_url:
        ids = await publish(base_url, 250)
    held = redis_client.xlen(EVENTS)
    assert 100 <= held < 250
    assert redis_client.xrange(EVENTS, count=1)[0][0] == ids[-held]


async def test_a_client_over_its_byte_budget_is_dropped_and_can_resume(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_server, client_buffer_events=1000, client_buffer_bytes=4000)
    with serve(settings) as base_url:
        async with sse(base_url, "?last_id=$") as reader:
            await asyncio.sleep(0.3)
            pipeline = redis_client.pipeline()
            for _ in range(40):
                pipeline.xadd(EVENTS, {"type": "big.event", "data": json.dumps({"pad": "x" * 300})})
            burst = pipeline.execute()
            received = []
            while (message := await reader.next()).event != "notice":
                received.append(message.id)
            error = message.json()
        assert error["notice"] == "slow_client" and "4000 bytes" in error["message"]
        assert len(received) < len(burst)
        async with sse(base_url, f"?last_id={error['resume_from']}") as resumed:
            rest = await resumed.take(len(burst) - len(received))
            assert received + [message.id for message in rest] == burst


class _FailOnce:
    """A skipped-entry counter that breaks the first time, as an unforeseen bug would."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("unforeseen")


async def test_the_reader_restarts_after_an_unexpected_failure(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    client = AsyncRedis.from_url(redis_server.url, decode_responses=True)
    hub = EventHub(
        client,
        EVENTS,
        read_count=100,
        block_ms=100,
        buffer_limit=100,
        buffer_limit_bytes=100_000,
        on_unreadable=_FailOnce(),
        restart_delays_s=(1.0,),
    )
    await hub.start()
    try:
        await asyncio.sleep(0.3)
        assert hub.reader_running
        start = await hub.resolve_start("$")
        async with hub.subscribe(start.cursor, EventFilter()) as subscription:
            waiting = asyncio.create_task(anext(subscription.batches()))
            await asyncio.sleep(0.3)  # replayed nothing, joined the live feed
            redis_client.xadd(EVENTS, {"type": "a.b", "data": "[" * 5000})
            with pytest.raises(SubscriptionClosed, match="restarting"):
                await asyncio.wait_for(waiting, 5)
        assert not hub.reader_running
        redis_client.xadd(EVENTS, {"type": "a.b", "data": "[" * 5000})
        await asyncio.sleep(1.5)
        assert hub.reader_running
        start = await hub.resolve_start("$")
        async with hub.subscribe(start.cursor, EventFilter()) as subscription:
            batches = subscription.batches()
            new_id = redis_client.xadd(EVENTS, {"type": "a.b", "data": "{}"})
            batch = await asyncio.wait_for(anext(batches), 5)
            assert [event.entry_id for event in batch] == [new_id]
    finally:
        await hub.stop()
        await client.aclose()
