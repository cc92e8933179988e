"""Live-stream readers for tests: an SSE parser over httpx and a WebSocket reader."""

from __future__ import annotations

import asyncio
import json
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
    """Reads an SSE response message by message, keeping every message seen."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.messages: list[SseMessage] = []
        self.comments: list[str] = []
        self._lines = response.aiter_lines()

    async def next(self, timeout_s: float = 10.0) -> SseMessage:
        return await asyncio.wait_for(self._next(), timeout_s)

    async def _next(self) -> SseMessage:
        message = SseMessage()
        has_field = False
        async for line in self._lines:
            if line == "":
                if has_field:
                    self.messages.append(message)
                    return message
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            has_field = True
            if name == "event":
                message.event = value
            elif name == "id":
                message.id = value
            elif name == "data":
                message.data = value if not message.data else message.data + "\n" + value
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
) -> None:
    """Follow /events/stream as a browser would: on an error event or a dropped connection,
    reconnect with Last-Event-ID, until finished() says so. Appends every id received."""
    while not finished():
        try:
            timeout = httpx.Timeout(5, read=5)
            async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
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
                        if message.event == "error":
                            errors.append(message.json()["error"])
                            break
                        if message.id is not None:
                            received.append(message.id)
                            last_id = message.id
        except (httpx.HTTPError, EOFError, TimeoutError):
            await asyncio.sleep(0.2)
