"""Clients that never read and clients replaying at once: the API's memory stays bounded and
POST /tasks keeps answering 201 (issue 17's replay attacks, against a real uvicorn)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
import redis
import websockets

from harness import wsframes
from harness.processes import rss_bytes
from harness.waiting import wait_until
from tests.support.agui_input import run_input

pytestmark = pytest.mark.slow

EVENTS = "shield:events"
BIG_EVENTS = 1000
BIG_PAD = "x" * 65_000
SSE_READERS_STUCK = 8
WS_READERS_STUCK = 3
CONNECTED_S = 8.0
RSS_WHILE_CONNECTED_LIMIT = 300 * 2**20
SETTLE_S = 10.0
REPLAYS = 300
REPLAY_EVENTS = 200
REPLAY_PAD = "y" * 8_000


def _fill(client: redis.Redis, count: int, pad: str) -> None:
    for first in range(0, count, 50):
        pipeline = client.pipeline(transaction=False)
        for index in range(first, min(count, first + 50)):
            pipeline.xadd(EVENTS, {"type": "big.event", "data": json.dumps({"n": index, "p": pad})})
        pipeline.execute()


def _stuck_client(base_url: str, request: bytes) -> socket.socket:
    """A client that sends its request and then never reads, with a small receive buffer."""
    host, port = base_url.removeprefix("http://").split(":")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    stuck.connect((host, int(port)))
    stuck.sendall(request)
    return stuck


def _sse_request(host: str) -> bytes:
    # No resume id: the whole stream is replayed to it.
    return (
        f"GET /events/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )


async def _post_tasks_until(base_url: str, stop: asyncio.Event, statuses: list[int]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        index = 0
        while not stop.is_set():
            reply = await client.post(
                "/tasks", json={"job_id": "mem", "chunk_id": f"c{index}", "content": "text"}
            )
            statuses.append(reply.status_code)
            index += 1
            await asyncio.sleep(0.2)


async def _warm_up(base_url: str) -> None:
    """The code paths the attack uses, once, so idle RSS is that of a process that served."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        reply = await client.post("/tasks", json={"job_id": "w", "chunk_id": "c", "content": "t"})
        assert reply.status_code == 201
        for resume_point in ("$", "0"):
            params = {"last_id": resume_point}
            async with client.stream("GET", "/events/stream", params=params) as stream:
                assert stream.status_code == 200
    ws_url = base_url.replace("http://", "ws://") + "/events/ws?last_id=0"
    async with websockets.connect(ws_url) as connection:
        await connection.ping()


async def test_clients_that_never_read_leave_memory_bounded_and_tasks_answered(
    api_process: tuple[str, int], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    base_url, pid = api_process
    host = base_url.removeprefix("http://")
    await _warm_up(base_url)
    await asyncio.sleep(1)
    idle = rss_bytes(pid)
    await asyncio.to_thread(_fill, redis_client, BIG_EVENTS, BIG_PAD)
    statuses: list[int] = []
    stop = asyncio.Event()
    poster = asyncio.create_task(_post_tasks_until(base_url, stop, statuses))
    stuck = [_stuck_client(base_url, _sse_request(host)) for _ in range(SSE_READERS_STUCK)]
    stuck += [
        _stuck_client(base_url, wsframes.handshake_request(host, "/events/ws"))
        for _ in range(WS_READERS_STUCK)
    ]
    samples = []
    deadline = time.monotonic() + CONNECTED_S
    while time.monotonic() < deadline:
        samples.append(rss_bytes(pid))
        await asyncio.sleep(0.2)
    for client in stuck:
        client.close()
    left_at = time.monotonic()

    def settled() -> bool:
        return rss_bytes(pid) <= max(idle * 1.10, idle + 15 * 2**20)

    await asyncio.to_thread(
        wait_until,
        settled,
        SETTLE_S,
        interval_s=0.25,
        describe=lambda: (
            f"RSS {rss_bytes(pid) / 2**20:.1f} MiB back near idle {idle / 2**20:.1f} MiB"
            f" (peak {max(samples) / 2**20:.1f} MiB)"
        ),
    )
    settled_after_s = time.monotonic() - left_at
    stop.set()
    await poster
    with capsys.disabled():
        print(
            f"\nnon-readers: idle {idle / 2**20:.1f} MiB, peak {max(samples) / 2**20:.1f} MiB,"
            f" back near idle {settled_after_s:.1f} s after they left,"
            f" {len(statuses)} POST /tasks"
        )
    assert max(samples) < RSS_WHILE_CONNECTED_LIMIT
    assert statuses and set(statuses) == {201}, statuses


async def _replaying_client(base_url: str, ready: asyncio.Queue[None]) -> int:
    """An SSE client replaying the whole stream; returns how many events it received."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(_sse_request(f"{host}:{port}"))
    await writer.drain()
    await ready.put(None)
    seen = 0
    tail = b""
    try:
        while seen < REPLAY_EVENTS:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return seen
            data = tail + chunk
            seen += data.count(b"event: replay.event")
            tail = data[-32:]
            seen -= tail.count(b"event: replay.event")
        return seen
    finally:
        writer.close()


async def test_tasks_are_accepted_while_300_clients_replay_at_once(
    api_process: tuple[str, int], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    base_url, _ = api_process
    pipeline = redis_client.pipeline(transaction=False)
    for index in range(REPLAY_EVENTS):
        data = json.dumps({"n": index, "p": REPLAY_PAD})
        pipeline.xadd(EVENTS, {"type": "replay.event", "data": data})
    pipeline.execute()
    statuses: list[int] = []
    stop = asyncio.Event()
    poster = asyncio.create_task(_post_tasks_until(base_url, stop, statuses))
    ready: asyncio.Queue[None] = asyncio.Queue()
    started = time.monotonic()
    replays = [asyncio.create_task(_replaying_client(base_url, ready)) for _ in range(REPLAYS)]
    counts = await asyncio.wait_for(asyncio.gather(*replays), 240)
    took_s = time.monotonic() - started
    stop.set()
    await poster
    with capsys.disabled():
        print(f"\n{REPLAYS} replays in {took_s:.1f} s, {len(statuses)} POST /tasks meanwhile")
    assert counts == [REPLAY_EVENTS] * REPLAYS
    assert statuses and set(statuses) == {201}, statuses


REATTACHES = 20
REATTACH_RSS_LIMIT = 200 * 2**20


async def _reattach(base_url: str, body: dict[str, object], hold_s: float) -> str:
    """Re-POST a run, read up to its snapshot, hold the stream open a while; the frames read."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        async with client.stream("POST", "/agui/ingest", json=body) as stream:
            assert stream.status_code == 200, (await stream.aread()).decode()
            text = ""
            async for piece in stream.aiter_text():
                text += piece
                if "STATE_SNAPSHOT" in text:
                    break
            await asyncio.sleep(hold_s)
            return text


async def test_twenty_agui_reattaches_read_the_run_not_the_whole_history(
    api_process: tuple[str, int], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 17: 20 AG-UI re-attaches behind 65 MB of other jobs' events took the API to
    1.27 GiB, each folding the events stream from the run's start. A re-attach now reads the
    job's state: memory stays near idle."""
    base_url, pid = api_process
    body = run_input("reattached-run", "One short document that no worker takes.")
    assert "STATE_SNAPSHOT" in await _reattach(base_url, body, 0)
    await asyncio.sleep(1)
    idle = rss_bytes(pid)
    await asyncio.to_thread(_fill, redis_client, BIG_EVENTS, BIG_PAD)
    samples: list[int] = []
    attaches = [asyncio.create_task(_reattach(base_url, body, hold_s=3)) for _ in range(REATTACHES)]
    while not all(task.done() for task in attaches):
        samples.append(rss_bytes(pid))
        await asyncio.sleep(0.1)
    texts = [task.result() for task in attaches]
    with capsys.disabled():
        print(
            f"\n{REATTACHES} AG-UI re-attaches: idle {idle / 2**20:.1f} MiB,"
            f" peak {max(samples) / 2**20:.1f} MiB"
        )
    assert all("STATE_SNAPSHOT" in text for text in texts)
    assert max(samples) < REATTACH_RSS_LIMIT
