"""Five rounds of the same 400-client SSE load: RSS settles after the first, it does not grow."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import redis

from harness.processes import rss_bytes
from harness.waiting import wait_until

pytestmark = pytest.mark.slow

CLIENTS = 400
ROUNDS = 5
EVENTS_PER_ROUND = 600
BURST = 100
PAYLOAD = "x" * 800
GROWTH_LIMIT = 1.10


def _connected(base_url: str) -> float:
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith('shield_connected_clients{transport="sse"} '):
            return float(line.split()[1])
    return 0.0


async def _client(base_url: str, ready: asyncio.Queue[None]) -> int:
    """One SSE client: read events until the round's last one, or a notice; return the count."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /events/stream?last_id=$ HTTP/1.1\r\nHost: {host}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    await ready.put(None)
    seen = 0
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return seen
            seen += chunk.count(b"event: load.")
            if b"event: load.last" in chunk or b"event: notice" in chunk:
                return seen
    finally:
        writer.close()


async def _round(base_url: str, publisher: redis.Redis) -> int:
    ready: asyncio.Queue[None] = asyncio.Queue()
    clients = []
    for index in range(CLIENTS):
        clients.append(asyncio.create_task(_client(base_url, ready)))
        if index % 100 == 99:
            await asyncio.sleep(0.05)
    for _ in range(CLIENTS):
        await asyncio.wait_for(ready.get(), 60)
    for first in range(0, EVENTS_PER_ROUND, BURST):
        pipeline = publisher.pipeline(transaction=False)
        for index in range(first, first + BURST):
            kind = "load.last" if index == EVENTS_PER_ROUND - 1 else "load.tick"
            pipeline.xadd("shield:events", {"type": kind, "data": json.dumps({"pad": PAYLOAD})})
        await asyncio.to_thread(pipeline.execute)
        await asyncio.sleep(0.05)
    counts = await asyncio.wait_for(asyncio.gather(*clients), 120)
    return sum(counts)


async def test_rss_after_five_rounds_stays_within_ten_percent_of_round_one(
    api_process: tuple[str, int], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    base_url, pid = api_process
    idle = rss_bytes(pid)
    after_rounds = []
    deliveries = []
    for _ in range(ROUNDS):
        deliveries.append(await _round(base_url, redis_client))
        await asyncio.to_thread(wait_until, lambda: _connected(base_url) == 0, 30)
        redis_client.xtrim("shield:events", maxlen=0)
        await asyncio.sleep(1)
        after_rounds.append(rss_bytes(pid))
    mib = [f"{value / 2**20:.1f}" for value in after_rounds]
    with capsys.disabled():
        started = time.strftime("%H:%M:%S")
        print(
            f"\n{started} memory rounds: idle {idle / 2**20:.1f} MiB, after each round {mib} MiB,"
            f" deliveries {deliveries} of {CLIENTS * EVENTS_PER_ROUND} per round"
        )
    assert all(count > 0 for count in deliveries)
    assert max(after_rounds[1:]) <= after_rounds[0] * GROWTH_LIMIT, mib
