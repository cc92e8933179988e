"""Task routes: enqueue, list dead letters, requeue a dead letter."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from service.api.app_state import State
from service.api.auth import CurrentGrant
from service.api.idempotent_answers import IdempotencyKey, created, idempotent_write
from service.api.trace_header import Traceparent
from service.core.identifiers import Identifier
from service.core.json_safety import JsonSafeModel
from service.events.stream_ids import parse_entry_id
from service.tasks.task_format import Task
from service.tasks.task_queue import DeadLetter

router = APIRouter(prefix="/tasks", tags=["tasks"])

# Workers drain a full backlog of 10,000 in about a second; a client waits a little longer.


class TaskIn(JsonSafeModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    job_id: Identifier
    chunk_id: Identifier
    content: str = Field(min_length=1)
    source_uri: str = ""
    source_type: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskCreated(BaseModel):
    id: str


class BinaryField(BaseModel):
    name_base64: str
    value_base64: str


class DeadLetterOut(BaseModel):
    id: str
    reason: str
    attempts: int
    original_id: str
    dead_lettered_at: str
    fields: dict[str, str]
    binary_fields: list[BinaryField] = Field(
        description="fields whose name or value is not UTF-8, as base64 of their bytes"
    )

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterOut:
        return cls(
            id=letter.entry_id,
            reason=letter.reason,
            attempts=letter.attempts,
            original_id=letter.original_id,
            dead_lettered_at=letter.dead_lettered_at,
            fields=letter.fields,
            binary_fields=[
                BinaryField(name_base64=name, value_base64=value)
                for name, value in letter.binary_fields
            ],
        )


class DeadLetterPage(BaseModel):
    total: int
    dead_letters: list[DeadLetterOut]


class Requeued(BaseModel):
    id: str
    requeued_from: str


@router.post(
    "",
    status_code=201,
    response_model=TaskCreated,
    responses={
        503: {
            "description": "the backlog is full, or too few replicas confirmed the task in "
            "time; retry after Retry-After seconds"
        }
    },
)
async def enqueue_task(
    body: TaskIn,
    state: State,
    grant: CurrentGrant,
    traceparent: Traceparent,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Add one task to the ingestion stream, or refuse with 503 while the backlog is full.
    Its job is counted (GET /jobs/{job_id}), with no known total."""
    grant.check_job(body.job_id)
    # The traceparent is a header, not the body: a replay under a new trace gets the first
    # answer, and the task keeps the first trace.
    write = idempotent_write("POST /tasks", idempotency_key, body)
    task = Task(**body.model_dump(), traceparent=traceparent)
    with state.metrics.redis_latency.time():
        admitted = await state.queue.admit(task.job_id, [task], whole=False, idempotency=write)
    return created(TaskCreated(id=admitted.entry_ids[0]), admitted.replayed)


def _entry_id(value: str) -> str:
    """A client's entry id in canonical ms-seq form; InvalidStreamId (400) otherwise."""
    ms, seq = parse_entry_id(value)
    return f"{ms}-{seq}"


@router.get("/dead-letters")
async def list_dead_letters(
    state: State,
    grant: CurrentGrant,
    count: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="page on from this entry id")] = None,
) -> DeadLetterPage:
    """Dead letters, oldest first, with their reason and attempt count."""
    grant.check_unlimited("the dead letters")
    letters = await state.queue.dead_letters(count, _entry_id(after) if after else None)
    return DeadLetterPage(
        total=await state.queue.dead_letter_count(),
        dead_letters=[DeadLetterOut.of(letter) for letter in letters],
    )


@router.post("/dead-letters/{entry_id}/requeue", status_code=201)
async def requeue_dead_letter(entry_id: str, state: State, grant: CurrentGrant) -> Requeued:
    """Move one dead letter back onto the task stream with a fresh retry count."""
    grant.check_unlimited("the dead letters")
    canonical = _entry_id(entry_id)
    new_id = await state.queue.requeue_dead_letter(canonical)
    if new_id is None:
        raise HTTPException(status_code=404, detail=f"no dead letter {canonical}")
    return Requeued(id=new_id, requeued_from=canonical)
