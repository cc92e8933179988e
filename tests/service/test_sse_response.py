"""The SSE response's send watchdog: a client that takes nothing is let go, one that reads
is not, and the frames go out exactly as yielded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message

from service.api.sse_response import event_stream_response

SCOPE = {"type": "http", "method": "GET", "path": "/events/stream", "headers": []}


async def _never_disconnects() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_send_stuck_past_the_timeout_ends_the_stream_and_its_generator() -> None:
    cleaned_up = asyncio.Event()

    async def frames(_: anyio.Event) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"id: 1-0\ndata: {}\n\n"
        finally:
            cleaned_up.set()

    sent: list[Message] = []

    async def stuck_after_the_head(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            # The client's window is full: this send never completes.
            await asyncio.Event().wait()

    response = event_stream_response(frames, send_timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(SendTimeoutError):
        await asyncio.wait_for(response(SCOPE, _never_disconnects, stuck_after_the_head), 5)
    assert 0.4 <= time.monotonic() - started < 2.0
    assert cleaned_up.is_set()
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]


async def test_a_reading_client_is_not_cut_off_and_gets_the_frames_as_yielded() -> None:
    chunks = [b"retry: 1000\nid: 0-0\n\n", b"event: a.b\nid: 1-0\ndata: {}\n\n" * 3]

    async def frames(_: anyio.Event) -> AsyncIterator[bytes]:
        for chunk in chunks:
            # Slower than the timeout in all, never in one send.
            await asyncio.sleep(0.3)
            yield chunk

    bodies: list[bytes] = []

    async def reads(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    response = event_stream_response(frames, send_timeout_s=0.4)
    await asyncio.wait_for(response(SCOPE, _never_disconnects, reads), 5)
    assert bodies == [*chunks, b""]
