"""The bench's minimal WebSocket client: frame splitting as a table, and a real server."""

from __future__ import annotations

import asyncio
import json
import struct
from urllib.parse import urlparse

import pytest
import redis

from harness import wsframes
from harness.redis_server import RedisServer
from tests.support.live_server import http, serve
from tests.support.service_settings import make_settings


def server_frame(opcode: int, payload: bytes, final: bool = True) -> bytes:
    first = (0x80 if final else 0) | opcode
    if len(payload) < 126:
        return bytes([first, len(payload)]) + payload
    if len(payload) < 1 << 16:
        return bytes([first, 126]) + struct.pack("!H", len(payload)) + payload
    return bytes([first, 127]) + struct.pack("!Q", len(payload)) + payload


LONG = b"x" * 300
HUGE = b"y" * 70_000


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (server_frame(1, b"hi"), [(1, b"hi")]),
        (server_frame(1, b"a") + server_frame(1, b"b"), [(1, b"a"), (1, b"b")]),
        (server_frame(1, LONG), [(1, LONG)]),
        (server_frame(1, HUGE), [(1, HUGE)]),
        (server_frame(9, b"p"), [(9, b"p")]),
        (server_frame(1, b"he", final=False) + server_frame(0, b"llo"), [(1, b"hello")]),
        (
            server_frame(1, b"a", final=False) + server_frame(9, b"") + server_frame(0, b"b"),
            [(9, b""), (1, b"ab")],
        ),
    ],
)
def test_frames_are_split_out_of_any_chunking(
    wire: bytes, expected: list[tuple[int, bytes]]
) -> None:
    whole = wsframes.FrameReader().feed(wire)
    byte_by_byte = wsframes.FrameReader()
    trickled = [
        message
        for index in range(len(wire))
        for message in byte_by_byte.feed(wire[index : index + 1])
    ]
    assert whole == expected
    assert trickled == expected
    assert not byte_by_byte.buffer


def test_client_frames_are_masked_and_unmask_to_the_payload() -> None:
    frame = wsframes.client_frame(wsframes.OP_PONG, b"ping-data")
    assert frame[0] == 0x80 | wsframes.OP_PONG
    assert frame[1] == 0x80 | len(b"ping-data")
    mask, masked = frame[2:6], frame[6:]
    assert bytes(byte ^ mask[index % 4] for index, byte in enumerate(masked)) == b"ping-data"


def test_a_masked_server_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="mask"):
        wsframes.FrameReader().feed(bytes([0x81, 0x81, 1, 2, 3, 4, 5]))


async def test_reads_every_event_from_the_real_websocket_route(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with serve(make_settings(redis_server)) as api:
        url = urlparse(api)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(wsframes.handshake_request(url.netloc, "/events/ws?last_id=$"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"sec-websocket-extensions" not in head.lower()
        with http(api) as client:
            ids = [
                client.post("/events", json={"type": "bench.tick", "data": {"n": n}}).json()["id"]
                for n in range(100)
            ]
        frames = wsframes.FrameReader()
        received: list[dict[str, object]] = []
        while len(received) < len(ids):
            chunk = await asyncio.wait_for(reader.read(1 << 16), 10)
            assert chunk
            received += [json.loads(payload) for _, payload in frames.feed(chunk)]
        writer.write(wsframes.client_frame(wsframes.OP_CLOSE))
        writer.close()
    assert [message["id"] for message in received] == ids
