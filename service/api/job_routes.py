"""Job routes: submit a document whole, watch it, list jobs, cancel one.

A token limited to some jobs is refused with 403 for any other, before the job is looked up:
the answer is the same whether or not the job exists, so it tells nothing about other jobs,
and it matches what POST /tasks answers for a job outside the token. Listing shows only the
token's jobs.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from service.api.app_state import State
from service.api.auth import CurrentGrant
from service.api.idempotent_answers import IdempotencyKey, created, idempotent_write
from service.api.trace_header import Traceparent
from service.core.identifiers import Identifier
from service.core.json_safety import JsonSafeModel
from service.jobs.job_admission import ChunkSpec, admit_job
from service.jobs.job_state import JobState, JobView, check_job_id

router = APIRouter(prefix="/jobs", tags=["jobs"])


class ChunkIn(JsonSafeModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    chunk_id: Identifier
    content: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class JobIn(JsonSafeModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    job_id: Identifier | None = None
    source_uri: str = ""
    source_type: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    chunks: list[ChunkIn] = Field(min_length=1)

    @model_validator(mode="after")
    def _chunk_ids_are_unique(self) -> JobIn:
        seen: set[str] = set()
        for chunk in self.chunks:
            if chunk.chunk_id in seen:
                raise ValueError(f"chunk_id {chunk.chunk_id!r} appears twice")
            seen.add(chunk.chunk_id)
        return self


class JobCreated(BaseModel):
    job_id: str
    ids: list[str]
    cursor: str = Field(description="an events-stream id: stream from it to miss none")


class ChunkOut(BaseModel):
    chunk_id: str
    state: str
    attempts: int
    entry_id: str
    error: str | None = None


class JobOut(BaseModel):
    job_id: str
    state: JobState
    total: int
    total_known: bool = Field(description="false for a job made with POST /tasks")
    queued: int
    running: int
    retrying: int
    done: int
    failed: int
    cancelled: int
    created_at: str
    finished_at: str | None
    metadata: dict[str, Any]
    chunks: list[ChunkOut] | None = None

    @classmethod
    def of(cls, view: JobView) -> JobOut:
        chunks = None
        if view.chunks is not None:
            chunks = [
                ChunkOut(
                    chunk_id=chunk.chunk_id,
                    state=chunk.state,
                    attempts=chunk.attempts,
                    entry_id=chunk.entry_id,
                    error=chunk.error,
                )
                for chunk in view.chunks
            ]
        return cls(
            job_id=view.job_id,
            state=view.state,
            total=view.total,
            total_known=view.total_known,
            created_at=view.created_at,
            finished_at=view.finished_at,
            metadata=dict(view.metadata),
            chunks=chunks,
            **view.counts,
        )


class JobPageOut(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None


class JobCancelling(BaseModel):
    job_id: str
    state: JobState


@router.post(
    "",
    status_code=201,
    response_model=JobCreated,
    responses={
        409: {"description": "a job with this job_id exists"},
        413: {"description": "more chunks than SHIELD_MAX_JOB_CHUNKS"},
        503: {"description": "the backlog has no room for the whole job; retry after"},
    },
)
async def submit_job(
    body: JobIn,
    state: State,
    grant: CurrentGrant,
    traceparent: Traceparent,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Enqueue every chunk of a document, or none; each keeps the request's traceparent."""
    write = idempotent_write("POST /jobs", idempotency_key, body)
    job_id = body.job_id or uuid.uuid4().hex
    grant.check_job(job_id)
    chunks = [ChunkSpec(chunk.chunk_id, chunk.content, chunk.metadata) for chunk in body.chunks]
    with state.metrics.redis_latency.time():
        admitted = await admit_job(
            state.queue,
            state.settings.max_job_chunks,
            job_id,
            chunks,
            source_uri=body.source_uri,
            source_type=body.source_type,
            metadata=body.metadata,
            idempotency=write,
            traceparent=traceparent,
        )
    answer = JobCreated(job_id=admitted.job_id, ids=admitted.entry_ids, cursor=admitted.cursor)
    return created(answer, admitted.replayed)


@router.get("")
async def list_jobs(
    state: State,
    grant: CurrentGrant,
    job_state: Annotated[JobState | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the page before")] = None,
) -> JobPageOut:
    """Recent jobs, newest first, without their chunks."""
    page = await state.jobs.page(limit, cursor, job_state, grant.may_use_job)
    return JobPageOut(jobs=[JobOut.of(view) for view in page.jobs], next_cursor=page.next_cursor)


@router.get("/{job_id}")
async def get_job(job_id: str, state: State, grant: CurrentGrant) -> JobOut:
    """One job: its state, counters and chunks."""
    grant.check_job(check_job_id(job_id))
    return JobOut.of(await state.jobs.get(job_id))


@router.delete("/{job_id}", status_code=202)
async def cancel_job(job_id: str, state: State, grant: CurrentGrant) -> JobCancelling:
    """Cancel a job: nothing of it starts any more, and its running handlers are told."""
    grant.check_job(check_job_id(job_id))
    return JobCancelling(job_id=job_id, state=await state.jobs.cancel(job_id))
