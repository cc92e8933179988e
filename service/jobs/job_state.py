"""A job's state as the API shows it, folded from its stored hashes: pure, no I/O.

The counters and each chunk's state are kept by the queue's scripts; what is left here is
the job's state name. Stored: ``cancelling`` and the final ``done``, ``failed`` (finished
with at least one dead letter) and ``cancelled``. Otherwise it is ``running`` once any chunk
has started or settled, and ``queued`` before. A job made with POST /tasks has no known
total, so it never finishes by itself: it stays ``running`` once work began.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from service.jobs.errors import InvalidJobId

MAX_JOB_ID_CHARS = 256
COUNTS = ("queued", "running", "retrying", "done", "failed", "cancelled")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
_STORED = {state.value: state for state in (JobState.CANCELLING, *FINISHED)}


def check_job_id(job_id: str) -> str:
    """The id, or InvalidJobId: 1 to 256 printable characters, as POST /tasks takes them."""
    if not 1 <= len(job_id) <= MAX_JOB_ID_CHARS or not job_id.isprintable():
        raise InvalidJobId(
            f"a job id is 1 to {MAX_JOB_ID_CHARS} printable characters, not {job_id!r}"
        )
    return job_id


@dataclass(frozen=True, slots=True)
class ChunkView:
    chunk_id: str
    state: str
    attempts: int
    entry_id: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class JobView:
    job_id: str
    state: JobState
    total: int
    total_known: bool
    counts: Mapping[str, int]
    created_at: str
    finished_at: str | None
    metadata: Mapping[str, object] = field(default_factory=dict)
    chunks: list[ChunkView] | None = None


def _int(value: str | None) -> int:
    return int(value) if value and value.lstrip("-").isdigit() else 0


def job_state(stored: str, counts: Mapping[str, int]) -> JobState:
    """The state name from the stored one and the counters."""
    if stored in _STORED:
        return _STORED[stored]
    if any(counts[name] for name in ("running", "done", "failed", "cancelled")):
        return JobState.RUNNING
    return JobState.QUEUED


def chunk_views(chunk_fields: Mapping[str, str]) -> list[ChunkView]:
    """The chunks in the order they were submitted."""
    records = sorted(
        ((json.loads(raw), chunk_id) for chunk_id, raw in chunk_fields.items()),
        key=lambda pair: int(pair[0].get("seq", 0)),
    )
    return [
        ChunkView(
            chunk_id=chunk_id,
            state=str(record.get("state", "")),
            attempts=int(record.get("attempts", 0)),
            entry_id=str(record.get("entry_id", "")),
            error=record.get("error"),
        )
        for record, chunk_id in records
    ]


def job_view(
    job_id: str, fields: Mapping[str, str], chunk_fields: Mapping[str, str] | None = None
) -> JobView:
    """A job from its hash (and its chunks' hash, when asked for)."""
    counts = {name: max(0, _int(fields.get(name))) for name in COUNTS}
    try:
        metadata = json.loads(fields.get("meta") or "{}")
    except ValueError:
        metadata = {}
    return JobView(
        job_id=job_id,
        state=job_state(fields.get("state", ""), counts),
        total=_int(fields.get("total")),
        total_known=fields.get("known_total") == "1",
        counts=counts,
        created_at=fields.get("created_at", ""),
        finished_at=fields.get("finished_at") or None,
        metadata=metadata if isinstance(metadata, dict) else {},
        chunks=None if chunk_fields is None else chunk_views(chunk_fields),
    )
