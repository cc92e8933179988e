"""The one way a whole job is admitted: POST /jobs and POST /agui/ingest both call admit_job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.core.idempotency import IdempotentWrite
from service.jobs.errors import TooManyChunks
from service.tasks.task_format import Task
from service.tasks.task_queue import Admitted, TaskQueue


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """One chunk of a document, as a client submits it."""

    chunk_id: str
    content: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


async def admit_job(
    queue: TaskQueue,
    max_chunks: int,
    job_id: str,
    chunks: Sequence[ChunkSpec],
    source_uri: str = "",
    source_type: str = "",
    metadata: Mapping[str, Any] | None = None,
    idempotency: IdempotentWrite | None = None,
    traceparent: str = "",
) -> Admitted:
    """Enqueue every chunk of a new job of known total, or none (see TaskQueue.admit).

    TooManyChunks past max_chunks (SHIELD_MAX_JOB_CHUNKS). The job's metadata is the source
    and `metadata`; each task's is `metadata` with its chunk's own on top. Every task keeps
    the request's traceparent ("" for none).
    """
    if len(chunks) > max_chunks:
        raise TooManyChunks(f"{len(chunks)} chunks; SHIELD_MAX_JOB_CHUNKS is {max_chunks}")
    shared = dict(metadata or {})
    tasks = [
        Task(
            job_id=job_id,
            chunk_id=chunk.chunk_id,
            content=chunk.content,
            source_uri=source_uri,
            source_type=source_type,
            metadata={**shared, **chunk.metadata},
            traceparent=traceparent,
        )
        for chunk in chunks
    ]
    job_metadata = {"source_uri": source_uri, "source_type": source_type, **shared}
    return await queue.admit(
        job_id, tasks, whole=True, job_metadata=job_metadata, idempotency=idempotency
    )
