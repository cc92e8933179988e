"""Task routes: enqueue, list dead letters, requeue a dead letter."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from service.api.state import State
from service.events import task_fields
from service.queue import DeadLetter
from service.streamids import normalize_resume_point, parse_entry_id

router = APIRouter(prefix="/tasks", tags=["tasks"])


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    job_id: str = Field(min_length=1, max_length=256)
    chunk_id: str = Field(min_length=1, max_length=256)
    content: str = Field(min_length=1)
    source_uri: str = ""
    source_type: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskCreated(BaseModel):
    id: str


class DeadLetterOut(BaseModel):
    id: str
    reason: str
    attempts: int
    original_id: str
    dead_lettered_at: str
    fields: dict[str, str]

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterOut:
        return cls(
            id=letter.entry_id,
            reason=letter.reason,
            attempts=letter.attempts,
            original_id=letter.original_id,
            dead_lettered_at=letter.dead_lettered_at,
            fields=letter.fields,
        )


class DeadLetterPage(BaseModel):
    total: int
    dead_letters: list[DeadLetterOut]


class Requeued(BaseModel):
    id: str
    requeued_from: str


@router.post("", status_code=201)
async def enqueue_task(body: TaskIn, state: State) -> TaskCreated:
    """Add one task to the ingestion stream."""
    fields = task_fields(
        job_id=body.job_id,
        chunk_id=body.chunk_id,
        content=body.content,
        source_uri=body.source_uri,
        source_type=body.source_type,
        metadata=body.metadata,
    )
    with state.metrics.redis_latency.time():
        entry_id = await state.queue.enqueue(fields)
    return TaskCreated(id=entry_id)


@router.get("/dead-letters")
async def list_dead_letters(
    state: State,
    count: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="page on from this entry id")] = None,
) -> DeadLetterPage:
    """Dead letters, oldest first, with their reason and attempt count."""
    start = normalize_resume_point(after) if after else None
    letters = await state.queue.dead_letters(count, start)
    return DeadLetterPage(
        total=await state.queue.dead_letter_count(),
        dead_letters=[DeadLetterOut.of(letter) for letter in letters],
    )


@router.post("/dead-letters/{entry_id}/requeue", status_code=201)
async def requeue_dead_letter(entry_id: str, state: State) -> Requeued:
    """Move one dead letter back onto the task stream with a fresh retry count."""
    ms, seq = parse_entry_id(entry_id)
    canonical = f"{ms}-{seq}"
    new_id = await state.queue.requeue_dead_letter(canonical)
    if new_id is None:
        raise HTTPException(status_code=404, detail=f"no dead letter {canonical}")
    return Requeued(id=new_id, requeued_from=canonical)
