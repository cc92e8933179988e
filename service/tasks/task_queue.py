"""The durable task queue on the ingestion stream: the whole at-least-once protocol.

- **Admit.** ``enqueue`` adds a task only while the worker group's backlog (pending plus not
  yet delivered) is under ``stream_maxlen``; past it, it raises QueueFull and writes nothing,
  so the API can answer 503 instead of accepting a task that trimming would later drop.
- **Read.** A worker reads new tasks with XREADGROUP. The acks of its previous batch, and their
  completion events, travel in the same round trip, ahead of the read.
- **Hold.** While a worker runs a batch, ``renew`` resets the idle time of the tasks it still
  owns (XCLAIM JUSTID), so only a dead or stuck worker's tasks become claimable.
- **Reclaim.** ``reclaim`` takes over the oldest task idle for ``claim_idle_ms``, one at a time.
- **Ack, retry, dead-letter.** Each is one Lua script that first checks that the task is still
  pending for this consumer: a worker whose task was taken from it can neither ack nor move it.
  A retry adds the task again with a higher retry count; a dead letter goes to ``:dlq`` with its
  reason, fields kept byte for byte. The move, the ack, the counter and the events are atomic.
- **Wait.** A retry is not added back at once: ``defer`` moves the task to a sorted set keyed
  by its due time (and acks its delivery) in one script, and ``promote`` adds due tasks back
  to the stream, judged by the Redis server's clock. A waiting task is pending under no
  worker, so no reclaim takes it early, and it survives every worker's death.
- **Jobs.** Every script that adds, starts, acks, retries, dead-letters, requeues or cancels a
  task also moves its chunk's state and its job's counters (service/jobs/lua/job_state.lua),
  in the same call: the counters cannot drift from the tasks, whatever crashes in between.
  ``admit`` adds a whole job (POST /jobs) or one task (POST /tasks) all or nothing, and keeps
  the Idempotency-Key record in that call too.
- **Trim.** Only entries the worker group has acked are trimmed: below the oldest pending id,
  or up to the last delivered id when nothing is pending (Redis 7.0 has no ACKED trim mode).
  Observer groups on the same stream, such as metrics-collector, may miss trimmed entries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from service.core import names
from service.core.idempotency import (
    IDEMPOTENCY_PRELUDE,
    IdempotentWrite,
    replayed_result,
    script_args,
)
from service.core.lua import Args, LuaScript, PipelinedCall, settle
from service.core.raw_text import base64_of, is_utf8
from service.core.redis_replies import entries, first_stream_entries, xadd_fields
from service.core.settings import Settings
from service.core.trace_context import trace_metadata
from service.events.stream_ids import FIRST_ID, parse_entry_id
from service.events.wire import Event, utc_now_iso
from service.jobs.errors import JobConflict
from service.jobs.job_context import JOB_STATE_PRELUDE, JobKeys
from service.tasks.errors import TaskError
from service.tasks.task_format import Task

log = logging.getLogger(__name__)

# XAUTOCLAIM calls per reclaim at most, each looking at ten pending entries: a thousand.
RECLAIM_CALLS = 100
# Due retries moved back to the stream per promote call; a longer backlog takes more calls.
PROMOTE_BATCH = 100

# Nothing can follow it, and Redis refuses an exclusive range that starts there.
LAST_POSSIBLE_ID = f"{2**64 - 1}-{2**64 - 1}"

_SCRIPTS = "service.tasks"
_JOBS = (JOB_STATE_PRELUDE,)

_CONFLICTS = {
    "exists": "job {job_id!r} exists already",
    "whole": "job {job_id!r} was submitted whole with POST /jobs; it takes no more tasks",
    "cancelled": "job {job_id!r} is cancelled",
}


class QueueFull(TaskError):
    """The worker group's backlog reached its cap; nothing was written."""

    def __init__(self, backlog: int, cap: int) -> None:
        super().__init__(f"task backlog is full: {backlog} unacked tasks, cap {cap}")
        self.backlog = backlog
        self.cap = cap


class NotReplicated(TaskError):
    """The task was written, but fewer replicas than required confirmed it in time."""

    def __init__(self, entry_id: str, confirmed: int, required: int) -> None:
        super().__init__(
            f"task {entry_id} reached {confirmed} of {required} replica(s) in time; "
            "it may run, but retry to be sure it is kept"
        )
        self.entry_id = entry_id


@dataclass(frozen=True, slots=True)
class Admitted:
    """Tasks admitted: their entry ids, the events cursor before their events, and whether
    this is the replay of an earlier request with the same Idempotency-Key."""

    job_id: str
    entry_ids: list[str]
    cursor: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """A task entry handed to this consumer, with the number of times it has been delivered."""

    entry_id: str
    fields: Mapping[str, str]
    deliveries: int
    # True when the read already began it (counted running, or acked for a cancelled job).
    begun: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """Tasks handled in a batch, to ack with the next read, and the events that say so.

    `chunks` names each entry's (job id, chunk id), in the order of entry_ids, when the
    caller has them (a worker decoded them): the ack script then need not read each entry
    back from the stream to count its chunk done. Without them it does.
    """

    entry_ids: Sequence[str]
    events: Sequence[Mapping[str, str]]
    chunks: Sequence[tuple[str, str]] | None = None

    def named(self) -> list[tuple[str, str, str]]:
        """(entry id, job id, chunk id) of each, in stream order; '' where not named."""
        chunks = self.chunks if self.chunks is not None else [("", "")] * len(self.entry_ids)
        named = [
            (entry_id, job, chunk)
            for entry_id, (job, chunk) in zip(self.entry_ids, chunks, strict=True)
        ]
        return sorted(named, key=lambda item: parse_entry_id(item[0]))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task that the queue gave up on.

    ``fields`` holds what is text; a field whose name or value is not UTF-8 is kept byte for
    byte in Redis and shown in ``binary_fields`` as base64 pairs.
    """

    entry_id: str
    reason: str
    attempts: int
    original_id: str
    dead_lettered_at: str
    fields: dict[str, str]
    binary_fields: list[tuple[str, str]]

    @classmethod
    def from_entry(cls, entry_id: str, fields: Mapping[str, str]) -> DeadLetter:
        text: dict[str, str] = {}
        binary: list[tuple[str, str]] = []
        for name, value in fields.items():
            if is_utf8(name) and is_utf8(value):
                text[name] = value
            else:
                binary.append((base64_of(name), base64_of(value)))
        meta = {
            name: value for name, value in text.items() if name.startswith(names.DLQ_FIELD_PREFIX)
        }
        attempts = meta.get(dead_letter_field("attempts"), "0")
        return cls(
            entry_id=entry_id,
            reason=meta.get(dead_letter_field("reason"), ""),
            attempts=int(attempts) if attempts.isdigit() else 0,
            original_id=meta.get(dead_letter_field("original_id"), ""),
            dead_lettered_at=meta.get(dead_letter_field("at"), ""),
            fields={name: value for name, value in text.items() if name not in meta},
            binary_fields=binary,
        )


def _flatten(mapping: Mapping[str, str]) -> list[str]:
    return [item for pair in mapping.items() for item in pair]


def _counted(items: Sequence[str]) -> Args:
    """Items prefixed by their count, as the scripts take a variable-length list."""
    return [len(items), *items]


def _events_args(events: Sequence[Mapping[str, str]]) -> Args:
    args: Args = []
    for event in events:
        args += _counted(_flatten(event))
    return args


def dead_letter_field(name: str) -> str:
    """A dead letter's own field (reason, attempts, original_id, at), beside the task's."""
    return names.DLQ_FIELD_PREFIX + name


class TaskQueue:
    """The task stream for one consumer group, with the Redis client injected."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._stream = settings.stream_ingestion
        self._group = settings.worker_group
        self._dead_letters = settings.dead_letter_stream
        self._counters = settings.worker_counters_key
        self._delayed = names.delayed_key(settings.stream_ingestion)
        self._delayed_tasks = names.delayed_tasks_key(settings.stream_ingestion)
        self._events = settings.stream_events
        self._maxlen = settings.stream_maxlen
        self._batch_size = settings.batch_size
        self._block_ms = settings.block_ms
        self._claim_idle_ms = settings.claim_idle_ms
        self._reclaim_from = FIRST_ID
        self._replicas = settings.task_replicas
        self._replica_timeout_ms = settings.task_replica_timeout_ms
        self._jobs = JobKeys.of(settings)
        self._idempotency_ttl_s = settings.idempotency_ttl_s
        self._admit = LuaScript(redis, _SCRIPTS, "admit", (*_JOBS, IDEMPOTENCY_PRELUDE))
        self._ack = LuaScript(redis, _SCRIPTS, "ack", _JOBS)
        self._begin = LuaScript(redis, _SCRIPTS, "begin", _JOBS)
        self._read_begin = LuaScript(redis, _SCRIPTS, "read_begin", _JOBS)
        self._ack_cancelled = LuaScript(redis, _SCRIPTS, "ack_cancelled", _JOBS)
        self._dead_letter = LuaScript(redis, _SCRIPTS, "dead_letter", _JOBS)
        self._defer = LuaScript(redis, _SCRIPTS, "defer", _JOBS)
        self._promote = LuaScript(redis, _SCRIPTS, "promote", _JOBS)
        self._renew = LuaScript(redis, _SCRIPTS, "renew")
        self._requeue = LuaScript(redis, _SCRIPTS, "requeue", _JOBS)

    async def enqueue(self, task: Task, idempotency: IdempotentWrite | None = None) -> str:
        """Add one task (its job counted, of unknown total) and its ingestion.queued event;
        see admit for what it raises."""
        admitted = await self.admit(task.job_id, [task], whole=False, idempotency=idempotency)
        return admitted.entry_ids[0]

    async def admit(
        self,
        job_id: str,
        tasks: Sequence[Task],
        whole: bool,
        job_metadata: Mapping[str, Any] | None = None,
        idempotency: IdempotentWrite | None = None,
    ) -> Admitted:
        """Add every task of one job and its ingestion.queued event, or none: QueueFull when
        the backlog has no room for all, JobConflict when the job cannot take them. `whole`
        makes a new job of known total (POST /jobs); otherwise the tasks join their job.

        With task_replicas set, WAIT on the same connection for that many replicas to have
        them, or raise NotReplicated: a failover to a replica without them would lose them.
        """
        record_key, request_hash = script_args(idempotency)
        keys = [self._stream, self._events, record_key]
        args: Args = [self._group, self._maxlen, self._maxlen, self._jobs.script_context()]
        args += ["job" if whole else "task", job_id, json.dumps(dict(job_metadata or {}))]
        args += [request_hash, self._idempotency_ttl_s, len(tasks)]
        for task in tasks:
            queued = Event(
                type="ingestion.queued",
                job_id=task.job_id,
                timestamp=task.timestamp,
                data={"chunk_id": task.chunk_id},
                metadata=trace_metadata(task.traceparent),
            )
            args += [task.chunk_id, *_counted(_flatten(queued.to_fields()))]
            args += _counted(_flatten(task.to_fields()))
        async with self._redis.pipeline(transaction=False) as pipeline:
            calls = {0: self._admit.queue(pipeline, keys, args)}
            if self._replicas:
                pipeline.wait(self._replicas, self._replica_timeout_ms)
            replies = await settle(await pipeline.execute(raise_on_error=False), calls)
        reply = list(replies[0])
        replayed = replayed_result(reply)
        if replayed is not None:
            reply = replayed
        if int(reply[0]) == 0:
            raise QueueFull(int(reply[1]), self._maxlen)
        if int(reply[0]) == 2:
            raise JobConflict(_CONFLICTS[str(reply[1])].format(job_id=job_id))
        entry_ids = [str(entry_id) for entry_id in reply[3:]]
        if self._replicas and replies[1] < self._replicas:
            raise NotReplicated(entry_ids[-1], replies[1], self._replicas)
        return Admitted(str(reply[2]), entry_ids, str(reply[1]), replayed is not None)

    async def begin(self, consumer: str, entries: Sequence[tuple[str, str, str]]) -> list[str]:
        """Count a batch's chunks running, and ack those of cancelled jobs instead: returns
        the ids acked as cancelled, which no handler may be given. `entries` are (entry id,
        job id, chunk id) as decoded; '' and '' have the script read them from the entry."""
        if not entries:
            return []
        keys = [self._stream, self._counters]
        args: Args = [self._group, consumer, self._jobs.script_context()]
        for entry in entries:
            args += entry
        return [str(entry_id) for entry_id in await self._begin(keys, args)]

    async def ack_cancelled(self, consumer: str, entry_id: str, why: str) -> bool:
        """Ack a task whose handler its job's cancellation stopped; False when another's."""
        keys = [self._stream, self._counters]
        args: Args = [self._group, consumer, self._jobs.script_context(), entry_id, why]
        return bool(await self._ack_cancelled(keys, args))

    async def cancelling_jobs(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs are being cancelled, in one round trip."""
        if not job_ids:
            return set()
        flags = await self._redis.smismember(self._jobs.cancelling, list(job_ids))
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    async def read(
        self,
        consumer: str,
        finished: Finished | None = None,
        events: Sequence[Mapping[str, str]] = (),
        block: bool = True,
        count: int | None = None,
    ) -> list[Delivery]:
        """Up to `count` (default batch_size) tasks never delivered before, waiting up to
        block_ms for them unless block is False.

        `events`, then the acks and events of finished tasks, go first in the same round
        trip: a worker announces the batch it has just started with its next read. A read
        that does not block also begins what it reads (see begin), in the same script: the
        tasks of cancelled jobs are acked and not returned, the others come back begun.
        """
        async with self._redis.pipeline(transaction=False) as pipeline:
            calls = self._queue_outbox(pipeline, consumer, finished, events)
            if block:
                pipeline.xreadgroup(
                    self._group,
                    consumer,
                    {self._stream: ">"},
                    count=count or self._batch_size,
                    block=self._block_ms,
                )
                read_calls = {}
            else:
                args: Args = [self._group, consumer, count or self._batch_size]
                args.append(self._jobs.script_context())
                index = len(pipeline)
                read_calls = {
                    index: self._read_begin.queue(pipeline, [self._stream, self._counters], args)
                }
            replies = await pipeline.execute(raise_on_error=False)
        replies = await self._settle_outbox(replies, calls, read_calls)
        if block:
            return [
                Delivery(entry_id, fields, 1)
                for entry_id, fields in first_stream_entries(replies[-1])
            ]
        read, cancelled = replies[-1]
        gone = {str(entry_id) for entry_id in cancelled}
        return [
            Delivery(str(entry_id), dict(zip(flat[::2], flat[1::2], strict=True)), 1, begun=True)
            for entry_id, flat in read
            if flat is not None and str(entry_id) not in gone
        ]

    async def ack(
        self,
        consumer: str,
        finished: Finished | None,
        events: Sequence[Mapping[str, str]] = (),
    ) -> list[str]:
        """Publish `events`, then ack finished tasks and publish their events, in a round trip
        of their own; returns the ids that were no longer this consumer's."""
        if (finished is None or not finished.entry_ids) and not events:
            return []
        async with self._redis.pipeline(transaction=False) as pipeline:
            calls = self._queue_outbox(pipeline, consumer, finished, events)
            replies = await pipeline.execute(raise_on_error=False)
        replies = await self._settle_outbox(replies, calls)
        return [str(entry_id) for index in calls for entry_id in replies[index]]

    def _queue_outbox(
        self,
        pipeline: Pipeline,
        consumer: str,
        finished: Finished | None,
        events: Sequence[Mapping[str, str]],
    ) -> dict[int, PipelinedCall]:
        for event in events:
            self._queue_event(pipeline, event)
        if finished is None or not finished.entry_ids:
            return {}
        # The tasks' ingestion.completed go first: the ack script may finish their job, and
        # job.completed is to be the job's last word on the stream.
        for event in finished.events:
            self._queue_event(pipeline, event)
        # The script checks ownership over the range from the first id to the last.
        keys = [self._stream, self._counters]
        args: Args = [self._group, consumer, self._maxlen, self._jobs.script_context()]
        for named in finished.named():
            args += named
        index = len(pipeline)
        call = self._ack.queue(pipeline, keys, args)
        return {index: call}

    def _queue_event(self, pipeline: Pipeline, event: Mapping[str, str]) -> None:
        pipeline.xadd(self._events, xadd_fields(event), maxlen=self._maxlen, approximate=True)

    async def _settle_outbox(
        self,
        replies: list[Any],
        calls: dict[int, PipelinedCall],
        other_calls: dict[int, PipelinedCall] | None = None,
    ) -> list[Any]:
        """Rerun what met NOSCRIPT (the acks in `calls` and any `other_calls`) and raise the
        pipeline's first error; log the finished ids that another worker owns now. Returns
        the settled replies."""
        replies = await settle(replies, {**calls, **(other_calls or {})})
        lost = [str(entry_id) for index in calls for entry_id in replies[index]]
        if lost:
            log.warning(
                "%d finished task(s) no longer pending for this worker (reclaimed by another,"
                " or acked by an attempt whose reply was lost): %s",
                len(lost),
                lost,
            )
        return replies

    async def has_abandoned(self) -> bool:
        """True when a task has sat pending, unrenewed, for claim_idle_ms: its worker died or
        hung. Looked at without claiming it, so no delivery is counted."""
        rows = await self._redis.xpending_range(
            self._stream, self._group, min="-", max="+", count=1, idle=self._claim_idle_ms
        )
        return bool(rows)

    async def reclaim(self, consumer: str) -> list[Delivery]:
        """Take over the oldest task left pending by a consumer idle for claim_idle_ms.

        One at a time: XAUTOCLAIM raises the delivery count of every entry it claims, so
        claiming a batch would charge a poison task's crashes to its innocent neighbours. With
        COUNT 1 a call looks at ten pending entries only, so the scan goes on from where the
        last call stopped: live workers renewing their tasks at the head of the pending list
        must not hide a dead worker's tasks behind them.
        """
        for _ in range(RECLAIM_CALLS):
            reply = await self._redis.xautoclaim(
                self._stream,
                self._group,
                consumer,
                min_idle_time=self._claim_idle_ms,
                start_id=self._reclaim_from,
                count=1,
            )
            # Redis answers 0-0 once the scan has reached the end of the pending list.
            self._reclaim_from = str(reply[0])
            claimed = entries(reply[1])
            if claimed:
                entry_id, fields = claimed[0]
                pending = await self._redis.xpending_range(
                    self._stream,
                    self._group,
                    min=entry_id,
                    max=entry_id,
                    count=1,
                    consumername=consumer,
                )
                deliveries = int(pending[0]["times_delivered"]) if pending else 1
                return [Delivery(entry_id, fields, deliveries)]
            if self._reclaim_from == FIRST_ID:
                return []
        return []

    async def renew(self, consumer: str, entry_ids: Iterable[str]) -> list[str]:
        """Reset the idle time of tasks this consumer still owns; returns those it owns."""
        ids = list(entry_ids)
        if not ids:
            return []
        kept = await self._renew([self._stream], [self._group, consumer, *ids])
        return [str(entry_id) for entry_id in kept]

    async def defer(
        self,
        consumer: str,
        delivery: Delivery,
        task: Task,
        due_ms: int,
        counter: str,
        events: Sequence[Mapping[str, str]],
        error: str = "",
    ) -> bool:
        """Hold the task until due_ms (ms since the epoch) and ack this delivery, atomically;
        False when the task is no longer this consumer's."""
        keys = [self._stream, self._delayed, self._delayed_tasks, self._counters, self._events]
        args: Args = [self._group, consumer, delivery.entry_id, counter, self._maxlen, due_ms]
        args += [self._jobs.script_context(), error]
        args += _counted(_flatten(task.to_fields())) + _events_args(events)
        return bool(await self._defer(keys, args))

    async def promote(self) -> tuple[int, int | None]:
        """Add due retries back to the stream: how many moved, and the ms until the next one
        is due (None when none waits)."""
        keys = [self._delayed, self._delayed_tasks, self._stream]
        moved, wait_ms = await self._promote(keys, [PROMOTE_BATCH, self._jobs.script_context()])
        return int(moved), (None if int(wait_ms) < 0 else int(wait_ms))

    async def waiting_count(self) -> int:
        """Tasks waiting for their retry."""
        count: int = await self._redis.zcard(self._delayed)
        return count

    async def dead_letter(
        self,
        consumer: str,
        delivery: Delivery,
        reason: str,
        attempts: int,
        events: Sequence[Mapping[str, str]],
    ) -> bool:
        """Move the delivery to the dead-letter stream, fields kept as they are, and ack it."""
        letter = {
            name: value
            for name, value in delivery.fields.items()
            if not name.startswith(names.DLQ_FIELD_PREFIX)
        }
        letter.update(
            {
                dead_letter_field("reason"): reason,
                dead_letter_field("attempts"): str(attempts),
                dead_letter_field("original_id"): delivery.entry_id,
                dead_letter_field("at"): utc_now_iso(),
            }
        )
        keys = [self._stream, self._dead_letters, self._counters, self._events]
        args: Args = [self._group, consumer, delivery.entry_id, "dead_lettered", self._maxlen]
        args += [self._jobs.script_context(), reason]
        args += _counted(_flatten(letter)) + _events_args(events)
        return bool(await self._dead_letter(keys, args))

    async def dead_letters(self, count: int, after: str | None = None) -> list[DeadLetter]:
        """The oldest dead letters, optionally strictly after an entry id."""
        if after == LAST_POSSIBLE_ID:
            return []
        start = f"({after}" if after else "-"
        page = entries(
            await self._redis.xrange(self._dead_letters, min=start, max="+", count=count)
        )
        return [DeadLetter.from_entry(entry_id, fields) for entry_id, fields in page]

    async def dead_letter_count(self) -> int:
        count: int = await self._redis.xlen(self._dead_letters)
        return count

    async def requeue_dead_letter(self, entry_id: str) -> str | None:
        """Put a dead letter back on the task stream; None when there is no such entry."""
        new_id = await self._requeue(
            [self._dead_letters, self._stream],
            [entry_id, names.DLQ_FIELD_PREFIX, "retry_count", self._jobs.script_context()],
        )
        return str(new_id) if new_id else None
