"""Reading /agui/ingest's SSE stream in tests: events, their ids, and checks on the sequence."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

TERMINAL = ("RUN_FINISHED", "RUN_ERROR")


class AguiReader:
    """Reads AG-UI events from the SSE body of /agui/ingest, keeping every one seen."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: list[dict[str, Any]] = []
        # The id: line of each event, in step with events.
        self.ids: list[str | None] = []
        self._lines = response.iter_lines()

    def next(self, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        data: list[str] = []
        frame_id: str | None = None
        for line in self._lines:
            if line.startswith("id:"):
                frame_id = line.removeprefix("id:").removeprefix(" ")
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").removeprefix(" "))
            elif line == "" and data:
                event: dict[str, Any] = json.loads("\n".join(data))
                self.events.append(event)
                self.ids.append(frame_id)
                return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event in {timeout_s} s after {self.events}")
        raise EOFError(f"stream ended after {self.events}")

    def take(self, count: int) -> list[dict[str, Any]]:
        return [self.next() for _ in range(count)]

    def until_end(self) -> list[dict[str, Any]]:
        """Events up to and including RUN_FINISHED or RUN_ERROR; the stream must close then."""
        taken = [self.next()]
        while taken[-1]["type"] not in TERMINAL:
            taken.append(self.next())
        with pytest.raises(EOFError):
            self.next(timeout_s=5)
        return taken


@contextmanager
def agui_run(
    base_url: str,
    body: dict[str, Any],
    token: str | None = None,
    last_event_id: str | None = None,
) -> Iterator[AguiReader]:
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    timeout = httpx.Timeout(10, read=30)
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        with client.stream("POST", "/agui/ingest", json=body, headers=headers) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield AguiReader(response)


def brief(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind in ("STEP_STARTED", "STEP_FINISHED"):
        return f"{kind} {event['stepName']}"
    if kind == "STATE_DELTA":
        return "STATE_DELTA " + ",".join(f"{op['path']}={op['value']}" for op in event["delta"])
    if kind == "STATE_SNAPSHOT":
        return f"STATE_SNAPSHOT {json.dumps(event['snapshot'], sort_keys=True)}"
    if kind == "CUSTOM":
        return f"CUSTOM {event['name']}"
    return str(kind)


def final_state(events: list[dict[str, Any]]) -> dict[str, int]:
    """The state a client ends with: the last snapshot with every later replace applied."""
    state: dict[str, int] = {}
    for event in events:
        if event["type"] == "STATE_SNAPSHOT":
            state = dict(event["snapshot"])
        elif event["type"] == "STATE_DELTA":
            for op in event["delta"]:
                assert op["op"] == "replace"
                state[op["path"].lstrip("/")] = op["value"]
    return state


def assert_steps_pair_up(events: list[dict[str, Any]]) -> None:
    """Each step opens once before it closes, and none is open at the end."""
    open_steps: set[str] = set()
    for event in events:
        if event["type"] == "STEP_STARTED":
            assert event["stepName"] not in open_steps, event
            open_steps.add(event["stepName"])
        elif event["type"] == "STEP_FINISHED":
            assert event["stepName"] in open_steps, event
            open_steps.discard(event["stepName"])
    assert not open_steps
