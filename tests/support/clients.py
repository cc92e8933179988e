"""Live-stream readers for tests: an SSE parser over httpx and a WebSocket reader."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets


@dataclass
class SseMessage:
    event: str = "message"
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Reads an SSE response as EventSource does, keeping every message dispatched.

    A message without data (the stream's opening ``retry:`` and ``id:``) is not dispatched;
    it only moves ``last_event_id`` and ``retry_ms``, as in a browser.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.messages: list[SseMessage] = []
        self.comments: list[str] = []
        self.last_event_id: str | None = None
        self.ids: list[str] = []
        self.retry_ms: int | None = None
        self._lines = response.aiter_lines()

    async def next(self, timeout_s: float = 10.0) -> SseMessage:
        return await asyncio.wait_for(self._next(), timeout_s)

    async def _next(self) -> SseMessage:
        message = SseMessage()
        has_data = False
        async for line in self._lines:
            if line == "":
                if has_data:
                    self.messages.append(message)
                    return message
                message = SseMessage()
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                message.event = value
            elif name == "id":
                message.id = value
                self.last_event_id = value
                self.ids.append(value)
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)
            elif name == "data":
                message.data = value if not has_data else message.data + "\n" + value
                has_data = True
        raise EOFError("stream ended")

    async def take(self, count: int, timeout_s: float = 10.0) -> list[SseMessage]:
        return [await self.next(timeout_s) for _ in range(count)]


async def ws_take(
    connection: websockets.ClientConnection, count: int, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    messages = []
    for _ in range(count):
        raw = await asyncio.wait_for(connection.recv(), timeout_s)
        messages.append(json.loads(raw))
    return messages


async def follow_sse(
    base_url: str,
    params: Mapping[str, str],
    received: list[str],
    errors: list[str],
    finished: Callable[[], bool],
    last_id: str = "0",
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Follow /events/stream as a browser would: on a notice or a dropped connection,
    reconnect with the last id seen (events, notices and the opening id alike) as
    Last-Event-ID, until finished() says so. Appends every event id received."""
    while not finished():
        try:
            timeout = httpx.Timeout(5, read=5)
            async with httpx.AsyncClient(
                base_url=base_url, timeout=timeout, verify=verify
            ) as client:
                async with client.stream(
                    "GET", "/events/stream", params=dict(params), headers={"Last-Event-ID": last_id}
                ) as response:
                    if response.status_code != 200:
                        errors.append(f"status {response.status_code}")
                        await asyncio.sleep(0.2)
                        continue
                    reader = SseReader(response)
                    while not finished():
                        message = await reader.next(timeout_s=3)
                        last_id = reader.last_event_id or last_id
                        if message.event != "notice":
                            received.append(message.id or "")
                            continue
                        errors.append(message.json()["message"])
                        # A gap notice is followed by the rest; any other ends the stream.
                        if message.json()["notice"] != "gap":
                            break
        except (httpx.HTTPError, EOFError, TimeoutError):
            await asyncio.sleep(0.2)
