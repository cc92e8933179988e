"""An ingestion job seen as an AG-UI run: the job's stream events in, AG-UI events out; pure.

The state is ``{total, done, failed}``: chunks of the run, chunks completed, chunks
dead-lettered. Each chunk is one step named by its chunk id.

Mapping of the worker's events (service/processing.py):
- ``ingestion.started`` (one per job per batch, naming chunk_ids): STEP_STARTED per chunk whose
  step is not open yet. A retry or a redelivery starts a chunk again; its step stays open.
- ``ingestion.completed`` (same shape): STEP_FINISHED per chunk, then one STATE_DELTA.
- ``ingestion.dead_lettered`` (message_id only): CUSTOM with the reason and the chunk id, then
  STEP_FINISHED and a STATE_DELTA. The chunk is found by message id: the run record knows the
  entry ids it enqueued, and started/failed events name the entry id of every retry.
- anything else of the job (``ingestion.failed`` of a retry, a producer's own events): CUSTOM
  named by the event type, valued by its data.

Choices:
- A chunk completed or dead-lettered whose step never opened here (its start was trimmed from
  the stream, or a client re-attached) gets STEP_STARTED right before STEP_FINISHED, so every
  stream passes a client's sequence checks.
- Events are idempotent: at-least-once delivery may complete a chunk twice. A completion wins
  over an earlier dead letter (the dead letter was requeued and then succeeded).
- The run ends when every chunk is settled: RUN_FINISHED when none is dead-lettered, else
  RUN_ERROR naming the dead-lettered chunks. Chunk ids outside the run are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
)
from ag_ui.encoder import EventEncoder

from service.core.raw_text import is_utf8, original_bytes

STARTED = "ingestion.started"
COMPLETED = "ingestion.completed"
FAILED = "ingestion.failed"
DEAD_LETTERED = "ingestion.dead_lettered"
DEAD_LETTERED_CODE = "chunks_dead_lettered"
INTERRUPTED_CODE = "stream_interrupted"
_ENCODER = EventEncoder()


@dataclass(frozen=True, slots=True)
class JobEvent:
    """The part of a stream event the mapping reads."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


def job_event_from_ws(ws: str) -> JobEvent:
    """Read a fan-out event's WebSocket JSON (which carries the full event, data included)."""
    try:
        message = json.loads(ws)
    except ValueError:
        return JobEvent(type="message")
    if not isinstance(message, dict):
        return JobEvent(type="message")
    data = message.get("data")
    event_type = message.get("type")
    return JobEvent(
        type=event_type if isinstance(event_type, str) else "message",
        data=data if isinstance(data, dict) else {},
    )


def encode_events(events: Iterable[BaseEvent]) -> bytes:
    """SSE frames of AG-UI events, through the SDK's own encoder."""
    return "".join(_ENCODER.encode(event) for event in events).encode("utf-8")


def interrupted(reason: str) -> RunErrorEvent:
    """The last event of a stream cut off before its run ended."""
    return RunErrorEvent(
        message=f"event stream interrupted ({utf8_safe(reason)}); "
        "POST the same runId again to re-attach",
        code=INTERRUPTED_CODE,
    )


class RunProgress:
    """Folds one job's events into the run's state and the AG-UI events that show it."""

    def __init__(
        self,
        thread_id: str,
        run_id: str,
        chunk_ids: Sequence[str],
        message_chunks: Mapping[str, str] | None = None,
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self._chunk_ids = tuple(chunk_ids)
        self._in_run = frozenset(self._chunk_ids)
        self._message_chunks = dict(message_chunks or {})
        self._open: dict[str, None] = {}  # an ordered set
        self._done: set[str] = set()
        self._failed: set[str] = set()
        self._handlers: dict[str, Callable[[Mapping[str, Any]], list[BaseEvent]]] = {
            STARTED: self._started,
            COMPLETED: self._completed,
            DEAD_LETTERED: self._dead_lettered,
        }

    @property
    def state(self) -> dict[str, int]:
        return {"total": len(self._chunk_ids), "done": len(self._done), "failed": len(self._failed)}

    @property
    def settled(self) -> bool:
        """Every chunk is done or dead-lettered."""
        return len(self._done) + len(self._failed) == len(self._chunk_ids)

    def opening(self) -> list[BaseEvent]:
        """How a stream starts: RUN_STARTED, the state so far, and the steps still open."""
        return [
            RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id),
            StateSnapshotEvent(snapshot=self.state),
            *(StepStartedEvent(step_name=chunk_id) for chunk_id in self._open),
        ]

    def apply(self, event: JobEvent) -> list[BaseEvent]:
        """Fold one event of the job; returns the AG-UI events that show the change."""
        before = self.state
        handler = self._handlers.get(event.type)
        if handler is None:
            self._learn_message(event.data)
            shown: list[BaseEvent] = [CustomEvent(name=event.type, value=utf8_safe(event.data))]
        else:
            shown = handler(event.data)
        delta = state_delta(before, self.state)
        if delta is not None:
            shown.append(delta)
        return shown

    def closing(self) -> BaseEvent:
        """The last event of a settled run."""
        if not self._failed:
            return RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, result=self.state)
        dead = [chunk_id for chunk_id in self._chunk_ids if chunk_id in self._failed]
        return RunErrorEvent(
            message=f"{len(dead)} of {len(self._chunk_ids)} chunk(s) dead-lettered: "
            + ", ".join(dead),
            code=DEAD_LETTERED_CODE,
        )

    def _started(self, data: Mapping[str, Any]) -> list[BaseEvent]:
        self._learn_batch(data)
        shown: list[BaseEvent] = []
        for chunk_id in self._run_chunks(data.get("chunk_ids")):
            if chunk_id in self._open or chunk_id in self._done:
                continue
            self._open[chunk_id] = None
            shown.append(StepStartedEvent(step_name=chunk_id))
        return shown

    def _completed(self, data: Mapping[str, Any]) -> list[BaseEvent]:
        shown: list[BaseEvent] = []
        for chunk_id in self._run_chunks(data.get("chunk_ids")):
            if chunk_id in self._done:
                continue
            shown += self._finish_step(chunk_id)
            self._failed.discard(chunk_id)
            self._done.add(chunk_id)
        return shown

    def _dead_lettered(self, data: Mapping[str, Any]) -> list[BaseEvent]:
        message_id = data.get("message_id")
        chunk_id = self._message_chunks.get(message_id) if isinstance(message_id, str) else None
        value = dict(utf8_safe(data))
        if chunk_id is not None:
            value["chunk_id"] = chunk_id
        shown: list[BaseEvent] = [CustomEvent(name=DEAD_LETTERED, value=value)]
        if chunk_id is None or chunk_id in self._done or chunk_id in self._failed:
            return shown
        shown += self._finish_step(chunk_id)
        self._failed.add(chunk_id)
        return shown

    def _finish_step(self, chunk_id: str) -> list[BaseEvent]:
        shown: list[BaseEvent] = []
        if chunk_id not in self._open:
            shown.append(StepStartedEvent(step_name=chunk_id))
        self._open.pop(chunk_id, None)
        shown.append(StepFinishedEvent(step_name=chunk_id))
        return shown

    def _run_chunks(self, chunk_ids: Any) -> list[str]:
        return [chunk_id for chunk_id in _strings(chunk_ids) if chunk_id in self._in_run]

    def _learn_batch(self, data: Mapping[str, Any]) -> None:
        message_ids = _strings(data.get("message_ids"))
        chunk_ids = _strings(data.get("chunk_ids"))
        if len(message_ids) == len(chunk_ids):
            for message_id, chunk_id in zip(message_ids, chunk_ids, strict=True):
                if chunk_id in self._in_run:
                    self._message_chunks[message_id] = chunk_id

    def _learn_message(self, data: Mapping[str, Any]) -> None:
        message_id, chunk_id = data.get("message_id"), data.get("chunk_id")
        if isinstance(message_id, str) and isinstance(chunk_id, str) and chunk_id in self._in_run:
            self._message_chunks[message_id] = chunk_id


def state_delta(before: Mapping[str, int], after: Mapping[str, int]) -> StateDeltaEvent | None:
    """A JSON Patch replacing the keys that changed, or None when nothing did."""
    operations = [
        {"op": "replace", "path": f"/{key}", "value": value}
        for key, value in after.items()
        if before.get(key) != value
    ]
    return StateDeltaEvent.model_validate({"delta": operations}) if operations else None


def utf8_safe(value: Any) -> Any:
    """A JSON value whose strings all encode as UTF-8.

    Text read from Redis keeps undecodable bytes as lone surrogates (service.rawtext); the
    AG-UI encoder would refuse them, so they become U+FFFD here.
    """
    if isinstance(value, str):
        return value if is_utf8(value) else _replace_undecodable(value)
    if isinstance(value, Mapping):
        return {utf8_safe(str(key)): utf8_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [utf8_safe(item) for item in value]
    return value


def _replace_undecodable(text: str) -> str:
    try:
        raw = original_bytes(text)
    except UnicodeEncodeError:
        # A lone surrogate that did not come from an undecodable byte (a JSON escape).
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]
