"""AG-UI runs in Redis: the run record that makes a re-POST re-attach, and the job's history.

The record is a hash at ``shield:agui:run:<runId>``:
- ``plan``: JSON ``{"start", "digest", "chunks"}``, written once with HSETNX. ``start`` is the
  last events-stream id taken before anything was enqueued, so a replay from it misses none
  of the job's events; ``digest`` tells the same document from a different one.
- ``entry:<chunk id>``: the task-stream id of each chunk, set as soon as it is enqueued.

A POST enqueues only the chunks without an entry, holding a short lock so two concurrent POSTs
of one run cannot both enqueue a chunk. A POST that failed half-way (backpressure, Redis gone)
is completed by the next POST of the same runId, and nothing is enqueued twice. The record
expires ``RUN_TTL_S`` after the last POST; after that the runId is free for a new run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, ResponseError

from service.agui.errors import AguiError
from service.agui.run_plan import IngestPlan
from service.agui.run_view import JobEvent
from service.core.redis_replies import entries, fields
from service.events.stream_ids import InvalidStreamId, is_after, normalize_resume_point
from service.events.wire import Event
from service.tasks.task_format import Task

RUN_KEY_PREFIX = "shield:agui:run:"
ENQUEUE_LOCK_SUFFIX = ":enqueuing"
ENTRY_FIELD_PREFIX = "entry:"
PLAN_FIELD = "plan"
RUN_TTL_S = 24 * 3600
# Long enough for any document the body limit lets through; a crashed holder frees it then.
ENQUEUE_LOCK_TIMEOUT_S = 30.0
ENQUEUE_LOCK_WAIT_S = 5.0
REPLAY_PAGE = 500

Enqueue = Callable[[Task], Awaitable[str]]


class RunConflict(AguiError):
    """The runId is taken by another document, or its record cannot be read."""


class RunBusy(AguiError):
    """Another request is still enqueuing this run."""


def run_key(run_id: str) -> str:
    return RUN_KEY_PREFIX + run_id


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as stored: where its events start, its chunks, and what is enqueued."""

    start: str
    digest: str
    chunk_ids: tuple[str, ...]
    entries: Mapping[str, str]

    @property
    def message_chunks(self) -> dict[str, str]:
        """Chunk id by task-stream entry id."""
        return {entry_id: chunk_id for chunk_id, entry_id in self.entries.items()}

    def missing(self) -> list[str]:
        return [chunk_id for chunk_id in self.chunk_ids if chunk_id not in self.entries]


def plan_record(plan: IngestPlan, start: str) -> str:
    """The JSON of the plan field."""
    return json.dumps(
        {"start": start, "digest": plan.digest, "chunks": list(plan.chunk_ids)},
        separators=(",", ":"),
    )


def decode_record(run_id: str, stored: Mapping[str, str]) -> RunRecord:
    """Read a run hash; anyone can write to Redis, so a bad one is a conflict, not a crash."""
    unreadable = RunConflict(f"{run_key(run_id)} holds no readable AG-UI run record")
    try:
        plan = json.loads(stored.get(PLAN_FIELD) or "")
    except ValueError:
        raise unreadable from None
    if not isinstance(plan, dict):
        raise unreadable
    start, digest, chunk_ids = plan.get("start"), plan.get("digest"), plan.get("chunks")
    if not isinstance(start, str) or not isinstance(digest, str) or not isinstance(chunk_ids, list):
        raise unreadable
    if not all(isinstance(chunk_id, str) for chunk_id in chunk_ids):
        raise unreadable
    try:
        start = normalize_resume_point(start)
    except InvalidStreamId:
        raise unreadable from None
    recorded = {
        name.removeprefix(ENTRY_FIELD_PREFIX): value
        for name, value in stored.items()
        if name.startswith(ENTRY_FIELD_PREFIX)
    }
    return RunRecord(start=start, digest=digest, chunk_ids=tuple(chunk_ids), entries=recorded)


class RunStore:
    """Run records and the enqueue-once protocol, on an injected Redis client."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def open(self, plan: IngestPlan, start: str) -> RunRecord:
        """Create the run's record, or read the one a previous POST created."""
        key = run_key(plan.run_id)
        try:
            async with self._redis.pipeline(transaction=True) as transaction:
                transaction.hsetnx(key, PLAN_FIELD, plan_record(plan, start))
                transaction.expire(key, RUN_TTL_S)
                transaction.hgetall(key)
                *_, stored = await transaction.execute()
        except ResponseError as error:
            # A pipeline wraps the reply: "Command # 1 (...) caused error: WRONGTYPE ...".
            if "WRONGTYPE" not in str(error):
                raise
            raise RunConflict(f"{key} holds no readable AG-UI run record (not a hash)") from None
        record = decode_record(plan.run_id, fields(stored))
        if record.digest != plan.digest:
            raise RunConflict(f"runId {plan.run_id!r} is already a run of a different document")
        return record

    async def enqueue_missing(
        self, plan: IngestPlan, record: RunRecord, enqueue: Enqueue
    ) -> RunRecord:
        """Enqueue the chunks that have no entry yet, one at a time, recording each."""
        if not record.missing():
            return record
        key = run_key(plan.run_id)
        lock = self._redis.lock(
            key + ENQUEUE_LOCK_SUFFIX,
            timeout=ENQUEUE_LOCK_TIMEOUT_S,
            blocking_timeout=ENQUEUE_LOCK_WAIT_S,
        )
        if not await lock.acquire():
            raise RunBusy(f"run {plan.run_id!r} is being enqueued by another request")
        try:
            # Whoever held the lock before may have enqueued some or all of them.
            record = decode_record(plan.run_id, fields(await self._redis.hgetall(key)))
            entries_now = dict(record.entries)
            for chunk in plan.chunks:
                if chunk.chunk_id in entries_now:
                    continue
                entry_id = await enqueue(plan.task_of(chunk))
                await self._redis.hset(key, ENTRY_FIELD_PREFIX + chunk.chunk_id, entry_id)
                entries_now[chunk.chunk_id] = entry_id
        finally:
            await _release(lock)
        return RunRecord(record.start, record.digest, record.chunk_ids, entries_now)


async def _release(lock: Lock) -> None:
    try:
        await lock.release()
    except LockError:
        # It expired and may be someone else's now; their enqueue skips what we recorded.
        pass


async def job_history(
    redis: Redis, stream: str, job_id: str, after: str, until: str
) -> AsyncIterator[JobEvent]:
    """The job's events after one entry id up to another, read with XRANGE page by page."""
    cursor = after
    while is_after(until, cursor):
        page = entries(await redis.xrange(stream, min=f"({cursor}", max=until, count=REPLAY_PAGE))
        for _, entry_fields in page:
            event = Event.from_fields(entry_fields)
            if event.job_id == job_id:
                yield JobEvent(type=event.type, data=event.data)
        if len(page) < REPLAY_PAGE:
            return
        cursor = page[-1][0]
