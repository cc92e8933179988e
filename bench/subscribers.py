"""A process of benchmark subscribers: `python -m bench.subscribers KIND TARGET COUNT`.

KIND is sse, ws, ws-batch (our API's WebSocket with ?batch=1: a JSON array per message), at
TARGET = base URL (ours or a baseline); uni_sse or centrifugo-ws (Centrifugo's
unidirectional SSE, or its WebSocket with the JSON protocol) at its base URL; or xread (raw
redis-py XREAD loops, TARGET = Redis URL). It connects COUNT clients, prints "ready", then
counts every event it receives and its latency from the publish time carried in the event
(field "t", microseconds since the epoch) until stdin closes, and prints one JSON line of
results.

The SSE and WebSocket clients do the same light work per byte (raw asyncio streams, a regex
over each event's bytes; bench.wsframes splits WebSocket frames), so the two transports'
cells compare the servers, not the clients. Neither asks for compression.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from redis.asyncio import Redis

from bench.centrifugo import subscribe_path as centrifugo_subscribe_path
from bench.centrifugo import websocket_greeting as centrifugo_ws_greeting
from harness import wsframes

PUBLISH_TIME = re.compile(rb'"t": ?(\d+)')
SAMPLE_LIMIT = 200_000


@dataclass
class Tally:
    deliveries: int = 0
    errors: int = 0
    latencies_us: list[int] = field(default_factory=list)
    seen: int = 0

    def record(self, published_us: int, now_us: int) -> None:
        self.deliveries += 1
        self.seen += 1
        if len(self.latencies_us) < SAMPLE_LIMIT:
            self.latencies_us.append(now_us - published_us)
        else:
            slot = random.randrange(self.seen)
            if slot < SAMPLE_LIMIT:
                self.latencies_us[slot] = now_us - published_us


def _now_us() -> int:
    return time.time_ns() // 1000


async def sse_client(
    base_url: str,
    tally: Tally,
    connected: asyncio.Queue[None],
    path: str = "/events/stream?last_id=$",
) -> None:
    url = urlparse(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        tally.errors += 1
        return
    await connected.put(None)
    carry = b""
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                tally.errors += 1
                return
            now = _now_us()
            data = carry + chunk
            cut = data.rfind(b"\n\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 2 :]
            for match in PUBLISH_TIME.finditer(data, 0, cut):
                tally.record(int(match.group(1)), now)
            if b"event: notice" in data[:cut] or b"event: error" in data[:cut]:
                tally.errors += 1
                return
    finally:
        writer.close()


async def ws_client(
    base_url: str,
    tally: Tally,
    connected: asyncio.Queue[None],
    path: str = "/events/ws?last_id=$",
    greeting: bytes = b"",
    ready_after: bytes = b"",
) -> None:
    """As light as sse_client: raw chunks, frames split by offset, a regex over each payload.

    A protocol that subscribes in-band (Centrifugo's) sends its greeting after the upgrade
    and is ready once a reply holding ready_after has come.
    """
    url = urlparse(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(wsframes.handshake_request(url.netloc, path))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        tally.errors += 1
        return
    if greeting:
        writer.write(wsframes.client_frame(wsframes.OP_TEXT, greeting))
    waiting = bool(ready_after)
    if not waiting:
        await connected.put(None)
    frames = wsframes.FrameReader()
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                tally.errors += 1
                return
            now = _now_us()
            for opcode, payload in frames.feed(chunk):
                if opcode == wsframes.OP_TEXT:
                    if waiting and ready_after in payload:
                        waiting = False
                        await connected.put(None)
                    if payload == b"{}":
                        # Centrifugo's ping is an empty object, answered in kind.
                        writer.write(wsframes.client_frame(wsframes.OP_TEXT, b"{}"))
                    # A batched message holds several events: count each one.
                    matches = PUBLISH_TIME.findall(payload)
                    for published in matches:
                        tally.record(int(published), now)
                    if not matches and (b'"notice"' in payload or b'"error"' in payload):
                        tally.errors += 1
                        return
                elif opcode == wsframes.OP_PING:
                    writer.write(wsframes.client_frame(wsframes.OP_PONG, payload))
                elif opcode == wsframes.OP_CLOSE:
                    tally.errors += 1
                    return
    finally:
        writer.close()


async def xread_client(redis_url: str, tally: Tally, connected: asyncio.Queue[None]) -> None:
    client = Redis.from_url(redis_url)
    newest = await client.xrevrange("shield:events", count=1)
    cursor = newest[0][0] if newest else b"0-0"
    await connected.put(None)
    try:
        while True:
            reply = await client.xread({"shield:events": cursor}, count=500, block=1000)
            if not reply:
                continue
            now = _now_us()
            for entry_id, fields in reply[0][1]:
                cursor = entry_id
                match = PUBLISH_TIME.search(fields.get(b"data", b""))
                if match:
                    tally.record(int(match.group(1)), now)
    finally:
        await client.aclose()


async def ws_batch_client(base_url: str, tally: Tally, connected: asyncio.Queue[None]) -> None:
    await ws_client(base_url, tally, connected, "/events/ws?last_id=$&batch=1")


async def centrifugo_sse_client(
    base_url: str, tally: Tally, connected: asyncio.Queue[None]
) -> None:
    """Centrifugo's uni_sse: the same SSE reader; its frames carry our payload unchanged."""
    await sse_client(base_url, tally, connected, centrifugo_subscribe_path())


async def centrifugo_ws_client(base_url: str, tally: Tally, connected: asyncio.Queue[None]) -> None:
    """Centrifugo's WebSocket with its JSON protocol: connect and subscribe in one frame."""
    greeting, ready_after = centrifugo_ws_greeting()
    await ws_client(base_url, tally, connected, "/connection/websocket", greeting, ready_after)


CLIENTS = {
    "sse": sse_client,
    "ws": ws_client,
    "ws-batch": ws_batch_client,
    "xread": xread_client,
    "uni_sse": centrifugo_sse_client,
    "centrifugo-ws": centrifugo_ws_client,
}


async def run(kind: str, target: str, count: int) -> None:
    tally = Tally()
    connected: asyncio.Queue[None] = asyncio.Queue()
    client = CLIENTS[kind]
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(client(target, tally, connected)))
        if len(tasks) % 100 == 0:
            await asyncio.sleep(0.05)
    for _ in range(count):
        await asyncio.wait_for(connected.get(), 60)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    # Report and leave at once: an overloaded process would take long to wind 1,000
    # clients down, and asyncio.run would wait for all of them.
    report(tally)
    os._exit(0)


def report(tally: Tally) -> None:
    result = {
        "deliveries": tally.deliveries,
        "errors": tally.errors,
        "latencies_us": tally.latencies_us,
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    kind, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from bench.servers import raise_fd_limit

    raise_fd_limit()
    asyncio.run(run(kind, target, count))


if __name__ == "__main__":
    main()
