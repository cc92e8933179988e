"""An ingestion job seen as an AG-UI run: the job's stream events in, AG-UI events out; pure.

The state is ``{total, done, failed}``: chunks of the job, chunks completed, chunks
dead-lettered. Each chunk is one step named by its chunk id.

A stream opens from the job's state (a RunSeed, see service.agui.job_snapshot), not from its
history: RUN_STARTED, STATE_SNAPSHOT, then STEP_STARTED and STEP_FINISHED for every chunk that
has settled already and STEP_STARTED for every one running, so every chunk gets both steps
even when a fast worker finished it before the stream began.

Mapping of the worker's events (service/tasks/processor.py) after that:
- ``ingestion.started`` (one per job per batch, naming chunk_ids): STEP_STARTED per chunk whose
  step is not open yet. A retry or a redelivery starts a chunk again; its step stays open.
- ``ingestion.completed`` (same shape): STEP_FINISHED per chunk, then one STATE_DELTA.
- ``ingestion.dead_lettered`` (message_id only): CUSTOM with the reason and the chunk id, then
  STEP_FINISHED and a STATE_DELTA. The chunk is found by message id: the job state knows each
  chunk's entry id, and started events name the entry id of every retry.
- ``job.cancelled``: CUSTOM, and the run ends. ``job.completed``: nothing; RUN_FINISHED says it.
- anything else of the job (``ingestion.failed`` of a retry, a producer's own events): CUSTOM
  named by the event type, valued by its data.

Choices:
- A chunk completed or dead-lettered whose step never opened here gets STEP_STARTED right
  before STEP_FINISHED, so every stream passes a client's sequence checks.
- Events are idempotent: at-least-once delivery may complete a chunk twice. A completion wins
  over an earlier dead letter (the dead letter was requeued and then succeeded).
- The run ends when every chunk is settled or the job is cancelled, with RUN_FINISHED after
  any open step is closed: outcome ``cancelled`` for a cancelled job; outcome ``interrupt``
  with one interrupt per dead letter still waiting (id = its dead-letter entry id, reason
  ``dead_lettered``, message = the error, responseSchema offering retry or skip), answered by
  a new run's ``resume``; else success. Chunk ids outside the job are ignored.
- Every frame carries an ``id:`` line: ``<events-stream id>/<n>`` for the n-th frame shown for
  that event, ``<snapshot cursor>/s<n>`` for the n-th frame of an opening. A re-POST with
  Last-Event-ID continues after it (service.agui.frame_ids).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    Interrupt,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedOutcome,
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
JOB_CANCELLED = "job.cancelled"
JOB_COMPLETED = "job.completed"
DEAD_LETTERED_REASON = "dead_lettered"
# What an answer to a dead-letter interrupt carries as its payload.
RESUME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"action": {"type": "string", "enum": ["retry", "skip"]}},
    "required": ["action"],
}
INTERRUPTED_CODE = "stream_interrupted"
_ENCODER = EventEncoder()


@dataclass(slots=True)
class RunSeed:
    """What a run's view starts from: the job's chunks in order and where each one stands."""

    chunk_ids: tuple[str, ...]
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    open: list[str] = field(default_factory=list)
    message_chunks: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False


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


def encode_frames(frames: Iterable[tuple[str, BaseEvent]]) -> bytes:
    """SSE frames of AG-UI events, each with its ``id:`` line before the SDK's data line."""
    return "".join(
        f"id: {frame_id}\n{_ENCODER.encode(event)}" for frame_id, event in frames
    ).encode("utf-8")


def dead_letter_interrupt(dead_letter_id: str, chunk_id: str, error: str) -> Interrupt:
    """The interrupt that asks what to do with one dead-lettered chunk."""
    return Interrupt(
        id=dead_letter_id,
        reason=DEAD_LETTERED_REASON,
        message=utf8_safe(error) or f"chunk {chunk_id} was dead-lettered",
        response_schema=RESUME_SCHEMA,
        metadata={"chunk_id": utf8_safe(chunk_id)},
    )


def interrupted(reason: str) -> RunErrorEvent:
    """The last event of a stream cut off before its run ended."""
    return RunErrorEvent(
        message=f"event stream interrupted ({utf8_safe(reason)}); "
        "POST the same runId again to re-attach",
        code=INTERRUPTED_CODE,
    )


class RunProgress:
    """Folds one job's events into the run's state and the AG-UI events that show it."""

    def __init__(self, thread_id: str, run_id: str, seed: RunSeed) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self._chunk_ids = seed.chunk_ids
        self._in_run = frozenset(self._chunk_ids)
        self._message_chunks = dict(seed.message_chunks)
        self._open: dict[str, None] = dict.fromkeys(seed.open)  # an ordered set
        self._done: set[str] = set(seed.done)
        self._failed: set[str] = set(seed.failed)
        self.cancelled = seed.cancelled
        self._handlers: dict[str, Callable[[Mapping[str, Any]], list[BaseEvent]]] = {
            STARTED: self._started,
            COMPLETED: self._completed,
            DEAD_LETTERED: self._dead_lettered,
            JOB_CANCELLED: self._job_cancelled,
            # The run's own RUN_FINISHED says it, and the queue may write it before the
            # last chunk's ingestion.completed.
            JOB_COMPLETED: lambda data: [],
        }

    @property
    def state(self) -> dict[str, int]:
        return {"total": len(self._chunk_ids), "done": len(self._done), "failed": len(self._failed)}

    @property
    def settled(self) -> bool:
        """Every chunk is done or dead-lettered."""
        return len(self._done) + len(self._failed) == len(self._chunk_ids)

    @property
    def ended(self) -> bool:
        """Nothing more will happen in this run: every chunk settled, or the job cancelled."""
        return self.settled or self.cancelled

    @property
    def failed_chunks(self) -> list[str]:
        return [chunk_id for chunk_id in self._chunk_ids if chunk_id in self._failed]

    def opening(self, run_started: bool = True) -> list[BaseEvent]:
        """How a stream starts: RUN_STARTED, the state so far, then each chunk's step as it
        stands: started and finished for a settled chunk, started for a running one."""
        shown: list[BaseEvent] = []
        if run_started:
            shown.append(RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id))
        shown.append(StateSnapshotEvent(snapshot=self.state))
        for chunk_id in self._chunk_ids:
            if chunk_id in self._done or chunk_id in self._failed:
                shown.append(StepStartedEvent(step_name=chunk_id))
                shown.append(StepFinishedEvent(step_name=chunk_id))
            elif chunk_id in self._open:
                shown.append(StepStartedEvent(step_name=chunk_id))
        return shown

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

    def closing(self, interrupts: Sequence[Interrupt] = ()) -> list[BaseEvent]:
        """The last events of an ended run: its open steps closed, then RUN_FINISHED with
        outcome cancelled (the job was cancelled), interrupt (dead letters wait for an
        answer) or success."""
        shown: list[BaseEvent] = [StepFinishedEvent(step_name=chunk_id) for chunk_id in self._open]
        self._open.clear()
        outcome: RunFinishedOutcome | None = None
        if self.cancelled:
            outcome = RunFinishedCancelledOutcome()
        elif interrupts:
            outcome = RunFinishedInterruptOutcome(interrupts=list(interrupts))
        shown.append(
            RunFinishedEvent(
                thread_id=self.thread_id, run_id=self.run_id, result=self.state, outcome=outcome
            )
        )
        return shown

    def _started(self, data: Mapping[str, Any]) -> list[BaseEvent]:
        self._learn_batch(data)
        shown: list[BaseEvent] = []
        for chunk_id in self._run_chunks(data.get("chunk_ids")):
            if chunk_id in self._open or chunk_id in self._done:
                continue
            # A requeued dead letter starts again: it is open, no longer failed.
            self._failed.discard(chunk_id)
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

    def _job_cancelled(self, data: Mapping[str, Any]) -> list[BaseEvent]:
        self.cancelled = True
        return [CustomEvent(name=JOB_CANCELLED, value=utf8_safe(data))]

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
