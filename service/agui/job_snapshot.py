"""A job's state as an AG-UI run starts from it: read from the job hashes, never from history.

The queue's scripts keep each chunk's state (service/jobs/lua/job_state.lua) in the same call
that writes the chunk's events, so a snapshot read in one MULTI with the events stream's last
id is exactly the state after that id: a run streams on from there and misses nothing.

A continuation (a re-POST with Last-Event-ID) needs the run's view at an older cursor C. It
is rebuilt from the snapshot and the job's events between C and the snapshot's cursor only
(the window the client missed), never by folding from the job's start: a chunk the window
does not touch was in the same state at C; one the window touches was running at C when its
first event there is a completion, a failure or a dead letter, or a start after an attempt
made before C (a retry), and not yet started when it is its first start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.agui.run_view import (
    COMPLETED,
    DEAD_LETTERED,
    FAILED,
    JOB_CANCELLED,
    STARTED,
    JobEvent,
    RunSeed,
)

_OPEN_STATES = frozenset({"running", "retrying"})
_RUNNING_AT_CURSOR = frozenset({COMPLETED, FAILED, DEAD_LETTERED})


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One chunk as the job state keeps it."""

    chunk_id: str
    state: str
    entry_id: str
    dead_letter_id: str = ""
    error: str = ""
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """The job's state and the events-stream id it is the state after."""

    job_id: str
    state: str
    chunks: tuple[ChunkRecord, ...]
    cursor: str
    # The oldest id the events stream still holds; None when it is empty.
    oldest: str | None = None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def chunk_records(stored: Mapping[str, str]) -> tuple[ChunkRecord, ...]:
    """The chunks hash (chunk id -> JSON record) in submission order; unreadable ones skipped."""
    rows: list[tuple[int, ChunkRecord]] = []
    for chunk_id, raw in stored.items():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        seq, attempts = record.get("seq"), record.get("attempts")
        rows.append(
            (
                seq if isinstance(seq, int) else 0,
                ChunkRecord(
                    chunk_id=chunk_id,
                    state=_text(record.get("state")),
                    entry_id=_text(record.get("entry_id")),
                    dead_letter_id=_text(record.get("dead_letter_id")),
                    error=_text(record.get("error")),
                    attempts=attempts if isinstance(attempts, int) else 0,
                ),
            )
        )
    rows.sort(key=lambda row: row[0])
    return tuple(record for _, record in rows)


def seed_of(snapshot: JobSnapshot) -> RunSeed:
    """The run's view at the snapshot's cursor."""
    seed = RunSeed(
        chunk_ids=tuple(chunk.chunk_id for chunk in snapshot.chunks),
        cancelled=snapshot.state == "cancelled",
    )
    for chunk in snapshot.chunks:
        if chunk.entry_id:
            seed.message_chunks[chunk.entry_id] = chunk.chunk_id
        if chunk.state == "done":
            seed.done.add(chunk.chunk_id)
        elif chunk.state == "failed":
            seed.failed.add(chunk.chunk_id)
        elif chunk.state in _OPEN_STATES:
            seed.open.append(chunk.chunk_id)
    return seed


def seed_before(snapshot: JobSnapshot, window: Iterable[JobEvent]) -> RunSeed:
    """The run's view before the window's events, which end at the snapshot's cursor."""
    seed = seed_of(snapshot)
    records = {chunk.chunk_id: chunk for chunk in snapshot.chunks}
    firsts: dict[str, str] = {}
    starts: dict[str, int] = {}
    for event in window:
        if event.type == JOB_CANCELLED:
            seed.cancelled = False
        _learn(seed.message_chunks, event)
        for chunk_id in chunks_named(event, seed.message_chunks):
            firsts.setdefault(chunk_id, event.type)
            if event.type == STARTED:
                starts[chunk_id] = starts.get(chunk_id, 0) + 1
    for chunk_id, first in firsts.items():
        seed.done.discard(chunk_id)
        seed.failed.discard(chunk_id)
        record = records.get(chunk_id)
        # Started again in the window after an attempt before it: it was waiting for its
        # retry (or redelivery), its step open, unless it was a dead letter requeued since
        # (its record keeps the dead letter's id), whose step had closed.
        retried = (
            record is not None
            and record.attempts > starts.get(chunk_id, 0)
            and not record.dead_letter_id
        )
        running = first in _RUNNING_AT_CURSOR or retried
        if running and chunk_id not in seed.open:
            seed.open.append(chunk_id)
        elif not running and chunk_id in seed.open:
            seed.open.remove(chunk_id)
    return seed


def chunks_named(event: JobEvent, message_chunks: Mapping[str, str]) -> list[str]:
    """The chunk ids an event of the job is about."""
    data = event.data
    if event.type in (STARTED, COMPLETED):
        named = data.get("chunk_ids")
        return [item for item in named if isinstance(item, str)] if isinstance(named, list) else []
    chunk_id = data.get("chunk_id")
    if isinstance(chunk_id, str):
        return [chunk_id]
    message_id = data.get("message_id")
    if isinstance(message_id, str) and message_id in message_chunks:
        return [message_chunks[message_id]]
    return []


def _learn(message_chunks: dict[str, str], event: JobEvent) -> None:
    message_ids, chunk_ids = event.data.get("message_ids"), event.data.get("chunk_ids")
    if isinstance(message_ids, list) and isinstance(chunk_ids, list):
        for message_id, chunk_id in zip(message_ids, chunk_ids, strict=False):
            if isinstance(message_id, str) and isinstance(chunk_id, str):
                message_chunks[message_id] = chunk_id
