"""1,000 SSE clients connect and leave: asyncio tasks and RSS of the API return to baseline."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from harness.waiting import wait_until

pytestmark = pytest.mark.slow

CLIENTS = 1_000
WAVE = 250
RSS_SLACK_BYTES = 24 * 1024 * 1024


def _gauges(base_url: str) -> dict[str, float]:
    wanted = {
        "shield_asyncio_tasks": "tasks",
        "process_resident_memory_bytes": "rss",
        'shield_connected_clients{transport="sse"}': "sse",
    }
    found = {}
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


async def _visit(client: httpx.AsyncClient, opened: asyncio.Event) -> None:
    async with client.stream("GET", "/events/stream", params={"last_id": "$"}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            # The stream opens with retry: and id: alone; the first data: is the event.
            if line.startswith("data:"):
                return
            opened.set()


async def _wave(base_url: str, count: int) -> None:
    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        opened = asyncio.Event()
        visits = [asyncio.create_task(_visit(client, opened)) for _ in range(count)]
        deadline = time.monotonic() + 30
        while _gauges(base_url).get("sse", 0) < count:
            assert time.monotonic() < deadline, f"only {_gauges(base_url)} of {count} connected"
            await asyncio.sleep(0.1)
        # One event makes every client read it and leave.
        reply = await client.post("/events", json={"type": "churn.leave"})
        assert reply.status_code == 201
        await asyncio.wait_for(asyncio.gather(*visits), 60)


def _settled(base_url: str, baseline: dict[str, float]) -> bool:
    now = _gauges(base_url)
    return now["sse"] == 0 and now["tasks"] <= baseline["tasks"]


async def test_connection_churn_leaks_nothing(
    api_process: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    base_url, _ = api_process
    await _wave(base_url, 50)
    await asyncio.to_thread(wait_until, lambda: _gauges(base_url)["sse"] == 0, 20)
    baseline = _gauges(base_url)
    started = time.monotonic()
    for _ in range(CLIENTS // WAVE):
        await _wave(base_url, WAVE)
    await asyncio.to_thread(wait_until, lambda: _settled(base_url, baseline), 30)
    after = _gauges(base_url)
    with capsys.disabled():
        print(
            f"\nconnection churn: {CLIENTS} SSE clients in {time.monotonic() - started:.1f}s;"
            f" tasks {baseline['tasks']:.0f} -> {after['tasks']:.0f};"
            f" RSS {baseline['rss'] / 2**20:.1f} -> {after['rss'] / 2**20:.1f} MiB"
        )
    assert after["tasks"] <= baseline["tasks"]
    assert after["rss"] <= baseline["rss"] + RSS_SLACK_BYTES
