"""AG-UI runs in Redis: which job a run shows, a thread's job, job snapshots, dead-letter answers.

A run record is a hash at ``shield:agui:run:<runId>`` with ``job`` (the job it shows: its own
runId for a run that ingests, the thread's job for a run that resumes) and ``digest`` (tells
a re-POST of the same run from another document or other answers under a reused runId),
written once with HSETNX. ``shield:agui:thread:<threadId>`` names the job of the thread's last
ingesting run, so a resume run finds the job its interrupts belong to. Both are kept as long
as a finished job (SHIELD_JOB_TTL_S) after the last POST.

The job itself (its chunks, their state) is the job state of service.jobs: a snapshot is read
from it, in one MULTI with the events stream's last id, never folded from the events stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.agui.errors import AguiError
from service.agui.job_snapshot import JobSnapshot, chunk_records
from service.agui.run_plan import ResumeAction, ResumeAnswer
from service.agui.run_view import JobEvent
from service.core.redis_replies import entries, fields
from service.events.stream_ids import FIRST_ID, is_after
from service.events.wire import Event
from service.jobs.job_context import JobKeys
from service.tasks.task_queue import TaskQueue

RUN_KEY_PREFIX = "shield:agui:run:"
THREAD_KEY_PREFIX = "shield:agui:thread:"
JOB_FIELD = "job"
DIGEST_FIELD = "digest"
WINDOW_PAGE = 500


class RunConflict(AguiError):
    """The runId is taken by another document, or a record cannot be read, or a resume
    answers what is not its thread's."""


def run_key(run_id: str) -> str:
    return RUN_KEY_PREFIX + run_id


def thread_key(thread_id: str) -> str:
    return THREAD_KEY_PREFIX + thread_id


@dataclass(frozen=True, slots=True)
class RunRecord:
    job_id: str
    digest: str
    created: bool


class RunStore:
    """Run and thread records, job snapshots and dead-letter answers, on an injected client."""

    def __init__(self, redis: Redis, keys: JobKeys, dead_letter_stream: str) -> None:
        self._redis = redis
        self._keys = keys
        self._dead_letters = dead_letter_stream

    async def open(self, run_id: str, job_id: str, digest: str) -> RunRecord:
        """Create the run's record, or read the one an earlier POST of the runId made."""
        key = run_key(run_id)
        try:
            async with self._redis.pipeline(transaction=True) as transaction:
                transaction.hsetnx(key, JOB_FIELD, job_id)
                transaction.hsetnx(key, DIGEST_FIELD, digest)
                transaction.expire(key, self._keys.ttl_s)
                transaction.hgetall(key)
                created, *_, stored = await transaction.execute()
        except ResponseError as error:
            # A pipeline wraps the reply: "Command # 1 (...) caused error: WRONGTYPE ...".
            if "WRONGTYPE" not in str(error):
                raise
            raise RunConflict(f"{key} holds no readable AG-UI run record (not a hash)") from None
        record = fields(stored)
        stored_job, stored_digest = record.get(JOB_FIELD), record.get(DIGEST_FIELD)
        if not stored_job or not stored_digest:
            raise RunConflict(f"{key} holds no readable AG-UI run record")
        if stored_digest != digest:
            raise RunConflict(f"runId {run_id!r} is already a run of a different document")
        return RunRecord(stored_job, stored_digest, bool(created))

    async def remember_thread(self, thread_id: str, job_id: str) -> None:
        await self._redis.set(thread_key(thread_id), job_id, ex=self._keys.ttl_s)

    async def thread_job(self, thread_id: str) -> str | None:
        try:
            job_id = await self._redis.get(thread_key(thread_id))
        except ResponseError:
            return None
        return job_id if isinstance(job_id, str) else None

    async def snapshot(self, job_id: str) -> JobSnapshot | None:
        """The job's state and the events stream's last id, read in one MULTI: the scripts
        that move chunks write their events in the same call, so nothing falls between."""
        events = self._keys.events
        async with self._redis.pipeline(transaction=True) as transaction:
            transaction.hgetall(self._keys.job_key(job_id))
            transaction.hgetall(self._keys.chunks_key(job_id))
            transaction.xrevrange(events, count=1)
            transaction.xrange(events, count=1)
            job, chunks, newest, oldest = await transaction.execute()
        job_fields = fields(job)
        if not job_fields:
            return None
        newest_entries, oldest_entries = entries(newest), entries(oldest)
        return JobSnapshot(
            job_id=job_id,
            state=job_fields.get("state", ""),
            chunks=chunk_records(fields(chunks)),
            cursor=newest_entries[0][0] if newest_entries else FIRST_ID,
            oldest=oldest_entries[0][0] if oldest_entries else None,
        )

    async def window(
        self, job_id: str, start: str, until: str, inclusive: bool
    ) -> list[tuple[str, JobEvent]]:
        """The job's events from `start` (itself included when `inclusive`) to `until`: the
        part of the stream a continuing client missed, read page by page."""
        found: list[tuple[str, JobEvent]] = []
        low = start if inclusive else f"({start}"
        while True:
            page = entries(
                await self._redis.xrange(self._keys.events, min=low, max=until, count=WINDOW_PAGE)
            )
            for entry_id, entry_fields in page:
                event = Event.from_fields(entry_fields)
                if event.job_id == job_id:
                    found.append((entry_id, JobEvent(type=event.type, data=event.data)))
            if len(page) < WINDOW_PAGE or not is_after(until, page[-1][0]):
                return found
            low = f"({page[-1][0]}"

    async def waiting_dead_letters(self, dead_letter_ids: Sequence[str]) -> set[str]:
        """Which of these dead letters are still in the dead-letter stream."""
        if not dead_letter_ids:
            return set()
        async with self._redis.pipeline(transaction=False) as pipeline:
            for entry_id in dead_letter_ids:
                pipeline.xrange(self._dead_letters, min=entry_id, max=entry_id)
            replies = await pipeline.execute()
        return {
            entry_id
            for entry_id, reply in zip(dead_letter_ids, replies, strict=True)
            if entries(reply)
        }

    async def answer(
        self, job_id: str, answers: Sequence[ResumeAnswer], queue: TaskQueue
    ) -> dict[str, str]:
        """Requeue (retry) or drop (skip) each answered dead letter of the job: what became
        of each. One already gone (answered by an earlier POST of the run) is left alone;
        one of another job is a RunConflict, checked for all before any is touched."""
        letters = await self._letters([answer.interrupt_id for answer in answers])
        for answer in answers:
            letter = letters.get(answer.interrupt_id)
            if letter is not None and letter.get("job_id") != job_id:
                raise RunConflict(
                    f"interrupt {answer.interrupt_id!r} is not a dead letter of job {job_id!r}"
                )
        outcome: dict[str, str] = {}
        for answer in answers:
            if answer.interrupt_id not in letters:
                outcome[answer.interrupt_id] = "gone"
            elif answer.action is ResumeAction.RETRY:
                new_id = await queue.requeue_dead_letter(answer.interrupt_id)
                outcome[answer.interrupt_id] = "requeued" if new_id else "gone"
            else:
                dropped = await self._redis.xdel(self._dead_letters, answer.interrupt_id)
                outcome[answer.interrupt_id] = "dropped" if dropped else "gone"
        return outcome

    async def _letters(self, entry_ids: Sequence[str]) -> dict[str, Mapping[str, str]]:
        async with self._redis.pipeline(transaction=False) as pipeline:
            for entry_id in entry_ids:
                pipeline.xrange(self._dead_letters, min=entry_id, max=entry_id)
            replies = await pipeline.execute()
        found: dict[str, Mapping[str, str]] = {}
        for entry_id, reply in zip(entry_ids, replies, strict=True):
            page = entries(reply)
            if page:
                found[entry_id] = page[0][1]
        return found
