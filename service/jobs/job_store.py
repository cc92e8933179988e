"""Jobs in Redis, read and cancelled, with the client injected. Written by the queue's scripts.

Listing pages newest first through the index (a sorted set by creation time); ids whose job
has expired are dropped from the index as a page meets them. The cursor is
``<created ms>:<job id>`` of the last job returned, so jobs made meanwhile shift nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.core import names
from service.core.lua import Args, LuaScript
from service.core.settings import Settings
from service.jobs.errors import InvalidJobId, JobConflict, JobNotFound
from service.jobs.job_context import JOB_STATE_PRELUDE, JobKeys
from service.jobs.job_state import JobState, JobView, check_job_id, job_view

# Index entries read per round trip while filling a page.
LIST_SCAN = 200


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[JobView]
    next_cursor: str | None


def _parse_cursor(cursor: str) -> tuple[int, str]:
    ms, sep, job_id = cursor.partition(":")
    if not sep or not ms.isdigit():
        raise InvalidJobId(f"not a jobs cursor: {cursor!r}")
    return int(ms), job_id


class JobStore:
    """Reads jobs, lists them, and cancels them."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._keys = JobKeys.of(settings)
        self._stream = settings.stream_ingestion
        self._group = settings.worker_group
        self._counters = settings.worker_counters_key
        self._delayed = names.delayed_key(settings.stream_ingestion)
        self._delayed_tasks = names.delayed_tasks_key(settings.stream_ingestion)
        self._cancel = LuaScript(redis, "service.jobs", "cancel", (JOB_STATE_PRELUDE,))

    async def get(self, job_id: str, with_chunks: bool = True) -> JobView:
        """The job, or JobNotFound."""
        check_job_id(job_id)
        async with self._redis.pipeline(transaction=False) as pipeline:
            pipeline.hgetall(self._keys.job_key(job_id))
            if with_chunks:
                pipeline.hgetall(self._keys.chunks_key(job_id))
            replies = await pipeline.execute()
        if not replies[0]:
            raise JobNotFound(f"no job {job_id!r}")
        return job_view(job_id, replies[0], replies[1] if with_chunks else None)

    async def cancel(self, job_id: str) -> JobState:
        """Start cancelling the job (or find it cancelling or cancelled): its state now.
        JobNotFound for no such job, JobConflict for one that is done or failed."""
        check_job_id(job_id)
        keys = [self._stream, self._delayed, self._delayed_tasks, self._counters]
        args: Args = [self._group, self._keys.script_context(), job_id]
        reply = await self._cancel(keys, args)
        if reply[0] == "missing":
            raise JobNotFound(f"no job {job_id!r}")
        if reply[0] == "finished":
            raise JobConflict(f"job {job_id!r} has finished ({reply[1]}); nothing to cancel")
        return JobState(reply[1])

    async def page(
        self,
        limit: int,
        cursor: str | None = None,
        state: JobState | None = None,
        visible: Callable[[str], bool] | None = None,
    ) -> JobPage:
        """Up to `limit` jobs, newest first, after `cursor`, in `state` if given, and only
        those `visible` (a predicate on the job id) lets through."""
        keep = visible or (lambda job_id: True)
        top: str = "+inf"
        after_id: str | None = None
        if cursor:
            ms, after_id = _parse_cursor(cursor)
            top = str(ms)
        found: list[JobView] = []
        scores: dict[str, int] = {}
        while len(found) < limit:
            rows: list[Any] = await self._redis.zrevrangebyscore(
                self._keys.index, top, "-inf", start=0, num=LIST_SCAN, withscores=True
            )
            fresh = [
                (str(job_id), int(score))
                for job_id, score in rows
                if after_id is None or int(score) < int(top) or str(job_id) < after_id
            ]
            if not fresh:
                return JobPage(found, None)
            views = await self._views([job_id for job_id, _ in fresh])
            for (job_id, score), view in zip(fresh, views, strict=True):
                after_id, top = job_id, str(score)
                if view is None or not keep(job_id):
                    continue
                if state is None or view.state is state:
                    found.append(view)
                    scores[job_id] = score
                    if len(found) == limit:
                        break
        last = found[-1]
        return JobPage(found, f"{scores[last.job_id]}:{last.job_id}")

    async def _views(self, job_ids: list[str]) -> list[JobView | None]:
        async with self._redis.pipeline(transaction=False) as pipeline:
            for job_id in job_ids:
                pipeline.hgetall(self._keys.job_key(job_id))
            replies = await pipeline.execute()
        gone = [job_id for job_id, fields in zip(job_ids, replies, strict=True) if not fields]
        if gone:
            await self._redis.zrem(self._keys.index, *gone)
        return [
            job_view(job_id, fields) if fields else None
            for job_id, fields in zip(job_ids, replies, strict=True)
        ]
