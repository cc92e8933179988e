"""Bounded replay: pages sized in bytes, a cap on replays at once, recent history, and a
WebSocket send timeout, against a real redis-server (and a real uvicorn for the socket)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from harness import wsframes
from harness.redis_server import RedisServer
from service.core.settings import Settings
from service.events.bus import EventHub
from service.events.filters import EventFilter
from service.events.history import (
    FIRST_REPLAY_PAGE,
    RecentHistory,
    ReplayLimits,
    next_page_size,
)
from service.events.wire import EncodedEvent, Event, encode_for_clients
from tests.support.event_api import EVENTS
from tests.support.live_server import serve

BIG_PAD = "x" * 60_000


@pytest.mark.parametrize(
    ("read_count", "page_bytes", "entries_read", "bytes_read", "expected"),
    [
        (500, 262_144, 0, 0, FIRST_REPLAY_PAGE),
        (2, 262_144, 0, 0, 2),
        (500, 262_144, 4, 4 * 65_536, 4),
        (500, 262_144, 10, 10 * 200, 500),
        (500, 262_144, 4, 4 * 1_000_000, 1),
        (500, 1_000_000, 100, 100 * 1_000, 500),
        (500, 100_000, 100, 100 * 1_000, 100),
    ],
)
def test_page_size_fits_the_page_bytes_at_the_average_entry_size(
    read_count: int, page_bytes: int, entries_read: int, bytes_read: int, expected: int
) -> None:
    assert next_page_size(read_count, page_bytes, entries_read, bytes_read) == expected


def _encoded(ms: int) -> EncodedEvent:
    return encode_for_clients(f"{ms}-0", Event(type="a.b", data={"n": ms}).to_fields())


def test_recent_history_serves_a_cursor_only_when_it_holds_everything_after_it() -> None:
    recent = RecentHistory(limit_bytes=10**6)
    assert recent.after("5-0") is None
    recent.extend([_encoded(ms) for ms in (10, 11, 12)], "13-0")  # 13-0 was unreadable
    assert recent.after("9-0") is None
    served, through = recent.after("10-0") or ([], "")
    assert [event.entry_id for event in served] == ["11-0", "12-0"] and through == "13-0"
    assert recent.after("13-0") == ([], "13-0")
    # A cursor ahead of what the hub has read keeps its place.
    assert recent.after("20-0") == ([], "20-0")


def test_recent_history_forgets_its_oldest_events_beyond_its_bytes() -> None:
    events = [_encoded(ms) for ms in range(11, 21)]  # all the same size
    one_event_bytes = len(events[0].sse)
    recent = RecentHistory(limit_bytes=3 * one_event_bytes)
    recent.extend(events, "20-0")
    # It holds 18 to 20: what followed 17 might have been in 17's place, now forgotten.
    assert recent.after("17-0") is None
    served, _ = recent.after("18-0") or ([], "")
    assert [event.entry_id for event in served] == ["19-0", "20-0"]


def _fill(redis_client: redis.Redis, count: int, pad: str) -> list[str]:
    pipeline = redis_client.pipeline(transaction=False)
    for index in range(count):
        pipeline.xadd(EVENTS, {"type": "big.event", "data": json.dumps({"n": index, "pad": pad})})
    return [str(entry_id) for entry_id in pipeline.execute()]


def _xrange_calls(redis_client: redis.Redis) -> int:
    stats = redis_client.info("commandstats")
    return int(stats.get("cmdstat_xrange", {}).get("calls", 0))


def _hub(client: AsyncRedis, limits: ReplayLimits) -> EventHub:
    return EventHub(
        client,
        EVENTS,
        read_count=500,
        block_ms=100,
        buffer_limit=1000,
        buffer_limit_bytes=10**8,
        replay_limits=limits,
    )


async def _replayed(hub: EventHub, cursor: str = "0-0") -> list[str]:
    async with hub.subscribe(cursor, EventFilter.parse(None, None)) as subscription:
        return [event.entry_id async for batch in hub.replay(subscription) for event in batch]


async def test_replay_pages_are_bounded_in_bytes_and_every_entry_comes_in_order(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    ids = _fill(redis_client, 40, BIG_PAD)
    client = AsyncRedis.from_url(redis_server.url, decode_responses=True)
    try:
        redis_client.config_resetstat()
        replayed = await _replayed(_hub(client, ReplayLimits(page_bytes=256_000, concurrency=2)))
    finally:
        await client.aclose()
    assert replayed == ids
    # About 60 KB an entry: 4 a page at most after the first, so at least 10 pages.
    assert _xrange_calls(redis_client) >= 10


async def test_no_more_replays_read_at_once_than_the_cap(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    ids = _fill(redis_client, 30, BIG_PAD)
    # A client whose pool would allow every replay a connection: only the cap limits them.
    client = AsyncRedis.from_url(redis_server.url, decode_responses=True, max_connections=100)
    hub = _hub(client, ReplayLimits(page_bytes=65_536, concurrency=2))
    connected: list[int] = []

    async def sample_connections() -> None:
        while True:
            connected.append(int(redis_client.info("clients")["connected_clients"]))
            await asyncio.sleep(0.005)

    baseline = int(redis_client.info("clients")["connected_clients"])
    sampler = asyncio.create_task(sample_connections())
    try:
        replays = await asyncio.gather(*(_replayed(hub) for _ in range(12)))
    finally:
        sampler.cancel()
        await client.aclose()
    assert all(replayed == ids for replayed in replays)
    assert max(connected) <= baseline + 2, (baseline, max(connected))


async def _stuck_websocket(base_url: str, query: str) -> socket.socket:
    """A WebSocket opened by hand whose client then reads nothing, with a small receive
    buffer, so the server's sends stop being taken soon."""
    host, port = base_url.removeprefix("http://").split(":")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    stuck.connect((host, int(port)))
    stuck.sendall(wsframes.handshake_request(f"{host}:{port}", f"/events/ws{query}"))
    head = b""
    while b"\r\n\r\n" not in head:
        head += stuck.recv(1)
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return stuck


def _read_all_frames(stuck: socket.socket) -> list[tuple[int, bytes]]:
    frames = wsframes.FrameReader()
    received: list[tuple[int, bytes]] = []
    stuck.settimeout(10)
    while chunk := stuck.recv(1 << 20):
        received += frames.feed(chunk)
        if any(opcode == wsframes.OP_CLOSE for opcode, _ in received):
            break
    return received


async def test_a_websocket_that_takes_nothing_is_closed_with_a_notice_to_resume_from(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Buffers far larger than the burst: only the send timeout can cut this client off.
    timeout_settings = settings.model_copy(
        update={
            "ws_send_timeout_s": 1.0,
            "client_buffer_bytes": 100_000_000,
            "client_buffer_events": 10_000,
        }
    )
    with serve(timeout_settings) as base_url:
        stuck = await _stuck_websocket(base_url, "?last_id=$")
        try:
            await asyncio.sleep(0.3)
            ids = _fill(redis_client, 400, BIG_PAD)
            # Longer than the send timeout, the notice's wait and the close's.
            await asyncio.sleep(4)
            frames = await asyncio.to_thread(_read_all_frames, stuck)
        finally:
            stuck.close()
    texts = [json.loads(payload) for opcode, payload in frames if opcode == wsframes.OP_TEXT]
    events = [message for message in texts if message["type"] == "big.event"]
    notices = [message for message in texts if message["type"] == "notice"]
    assert 0 < len(events) < len(ids), "a client that read nothing for 4 s got everything"
    assert [event["id"] for event in events] == ids[: len(events)]
    # The notice was queued behind what the client had not read, or the socket was closed
    # without it; either way the client is let go and resumes from the last id it has.
    for notice in notices:
        assert notice["notice"] == "slow_client" and "within 1s" in str(notice["message"])
        assert notice["resume_from"] in ids[: len(events)]
