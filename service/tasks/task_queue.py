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
- **Trim.** Only entries the worker group has acked are trimmed: below the oldest pending id,
  or up to the last delivered id when nothing is pending (Redis 7.0 has no ACKED trim mode).
  Observer groups on the same stream, such as metrics-collector, may miss trimmed entries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from service.core.raw_text import base64_of, is_utf8
from service.core.redis_replies import entries, first_stream_entries, xadd_fields
from service.core.settings import Settings
from service.events.stream_ids import FIRST_ID, parse_entry_id
from service.events.wire import utc_now_iso
from service.tasks.task_format import Task

log = logging.getLogger(__name__)

# XAUTOCLAIM calls per reclaim at most, each looking at ten pending entries: a thousand.
RECLAIM_CALLS = 100

# Nothing can follow it, and Redis refuses an exclusive range that starts there.
LAST_POSSIBLE_ID = f"{2**64 - 1}-{2**64 - 1}"

# Dead-letter metadata is stored beside the task's own fields under this prefix.
DLQ_PREFIX = "dlq_"

# group_row: a group's row of XINFO GROUPS as a table, or nil; owned: whether an entry is
# pending for this consumer.
_LUA_HELPERS = """
local function group_row(stream, name)
  if redis.call('EXISTS', stream) == 0 then return nil end
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local row = {}
    for i = 1, #info, 2 do row[info[i]] = info[i + 1] end
    if row['name'] == name then return row end
  end
  return nil
end
local function owned(stream, group, consumer, id)
  return #redis.call('XPENDING', stream, group, id, id, 1, consumer) == 1
end
"""

# KEYS: stream. ARGV: group, cap, fields... Returns {1, id} or {0, backlog}.
# XLEN bounds the backlog from above, so the group is only looked at near the cap. There, what
# the group has acked is trimmed first (below its oldest pending entry, or below the last one
# delivered when none is pending): the ack script trims only past maxlen, so a stream held at
# exactly the cap would otherwise never shrink. The backlog is then pending plus unread. A
# group that has been delivered the newest entry has read everything, whatever Redis's lag
# says: after a failover the promoted replica's lag can be off by the stream's whole history
# (redis/redis#12898, fixed in 7.2.4). A lag that Redis cannot tell (nil) counts as the whole
# stream: refuse rather than guess low.
_ADMIT = (
    _LUA_HELPERS
    + """
local stream, group, cap = KEYS[1], ARGV[1], tonumber(ARGV[2])
local length = redis.call('XLEN', stream)
if length >= cap then
  local backlog = length
  local row = group_row(stream, group)
  if row then
    local pending = redis.call('XPENDING', stream, group)
    local safe = pending[2] or row['last-delivered-id']
    redis.call('XTRIM', stream, 'MINID', safe)
    length = redis.call('XLEN', stream)
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    local unread = length
    if newest == nil or newest[1] == row['last-delivered-id'] then
      unread = 0
    elseif row['lag'] then
      unread = math.min(row['lag'], length)
    end
    backlog = math.min(pending[1] + unread, length)
  end
  if backlog >= cap then return {0, backlog} end
end
return {1, redis.call('XADD', stream, '*', unpack(ARGV, 3))}
"""
)

# KEYS: stream, counters. ARGV: group, consumer, maxlen, ids in stream order... Acks the ids
# still pending for this consumer (one XPENDING over their range, not one per id) and returns
# the others, which another consumer owns now. Then, past maxlen, trims what is acked: below
# the oldest pending entry, or, with nothing pending, below the last id acked here: it was
# pending on this server, so every entry before it was delivered here, and none is pending.
# Not below an id that was not pending here: after a failover the promoted replica may never
# have seen that delivery, and the entries before it are still to be delivered.
_ACK = """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local first, last, count = ARGV[4], ARGV[#ARGV], #ARGV - 3
local pending = {}
for _, row in ipairs(redis.call('XPENDING', stream, group, first, last, count + 100, consumer)) do
  pending[row[1]] = true
end
local mine, lost = {}, {}
for i = 4, #ARGV do
  if pending[ARGV[i]] then table.insert(mine, ARGV[i]) else table.insert(lost, ARGV[i]) end
end
if #mine > 0 then
  redis.call('XACK', stream, group, unpack(mine))
  redis.call('HINCRBY', KEYS[2], 'acked', #mine)
end
if redis.call('XLEN', stream) > tonumber(ARGV[3]) then
  local safe = redis.call('XPENDING', stream, group)[2] or mine[#mine]
  if safe then redis.call('XTRIM', stream, 'MINID', '~', safe) end
end
return lost
"""

# KEYS: stream, target, counters, events. ARGV: group, consumer, id, counter, events maxlen,
# n, the target entry's n field-value items, then per event: m and its m items.
# Returns 0, and does nothing, when the task is no longer this consumer's.
_MOVE = (
    _LUA_HELPERS
    + """
local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if not owned(stream, group, consumer, id) then return 0 end
local n = tonumber(ARGV[6])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 7, 6 + n))
redis.call('XACK', stream, group, id)
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
local i = 7 + n
while i <= #ARGV do
  local m = tonumber(ARGV[i])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, i + 1, i + m))
  i = i + 1 + m
end
return 1
"""
)

# KEYS: stream. ARGV: group, consumer, ids... Resets the idle time of the ids this consumer
# still owns, without counting a delivery, and returns them.
_RENEW = (
    _LUA_HELPERS
    + """
local kept = {}
for i = 3, #ARGV do
  if owned(KEYS[1], ARGV[1], ARGV[2], ARGV[i]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    table.insert(kept, ARGV[i])
  end
end
return kept
"""
)

# Atomically copies a dead letter back onto the task stream, with a fresh retry count and
# without its dlq_* fields, and deletes it; returns false when the id is not there.
_REQUEUE = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return false end
local fields = entry[1][2]
local out = {}
for i = 1, #fields, 2 do
  local name = fields[i]
  if string.sub(name, 1, 4) ~= 'dlq_' then
    local value = fields[i + 1]
    if name == 'retry_count' then value = '0' end
    table.insert(out, name)
    table.insert(out, value)
  end
end
if #out == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""


class QueueFull(Exception):
    """The worker group's backlog reached its cap; nothing was written."""

    def __init__(self, backlog: int, cap: int) -> None:
        super().__init__(f"task backlog is full: {backlog} unacked tasks, cap {cap}")
        self.backlog = backlog
        self.cap = cap


class NotReplicated(Exception):
    """The task was written, but fewer replicas than required confirmed it in time."""

    def __init__(self, entry_id: str, confirmed: int, required: int) -> None:
        super().__init__(
            f"task {entry_id} reached {confirmed} of {required} replica(s) in time; "
            "it may run, but retry to be sure it is kept"
        )
        self.entry_id = entry_id


@dataclass(frozen=True, slots=True)
class Delivery:
    """A task entry handed to this consumer, with the number of times it has been delivered."""

    entry_id: str
    fields: Mapping[str, str]
    deliveries: int


@dataclass(frozen=True, slots=True)
class Finished:
    """Tasks handled in a batch, to ack with the next read, and the events that say so."""

    entry_ids: Sequence[str]
    events: Sequence[Mapping[str, str]]


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
        meta = {name: value for name, value in text.items() if name.startswith(DLQ_PREFIX)}
        attempts = meta.get("dlq_attempts", "0")
        return cls(
            entry_id=entry_id,
            reason=meta.get("dlq_reason", ""),
            attempts=int(attempts) if attempts.isdigit() else 0,
            original_id=meta.get("dlq_original_id", ""),
            dead_lettered_at=meta.get("dlq_at", ""),
            fields={name: value for name, value in text.items() if name not in meta},
            binary_fields=binary,
        )


def _flatten(mapping: Mapping[str, str]) -> list[str]:
    return [item for pair in mapping.items() for item in pair]


class TaskQueue:
    """The task stream for one consumer group, with the Redis client injected."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._stream = settings.stream_ingestion
        self._group = settings.worker_group
        self._dead_letters = settings.dead_letter_stream
        self._counters = settings.worker_counters_key
        self._events = settings.stream_events
        self._maxlen = settings.stream_maxlen
        self._batch_size = settings.batch_size
        self._block_ms = settings.block_ms
        self._claim_idle_ms = settings.claim_idle_ms
        self._reclaim_from = FIRST_ID
        self._ack = redis.register_script(_ACK)
        self._replicas = settings.task_replicas
        self._replica_timeout_ms = settings.task_replica_timeout_ms
        self._move = redis.register_script(_MOVE)
        self._renew = redis.register_script(_RENEW)
        self._requeue = redis.register_script(_REQUEUE)

    async def enqueue(self, task: Task) -> str:
        """Add one task, or raise QueueFull when the backlog is at its cap.

        With task_replicas set, WAIT on the same connection for that many replicas to have
        it, or raise NotReplicated: a failover to a replica without it would lose it.
        """
        args: list[str | int] = [self._group, self._maxlen, *_flatten(task.to_fields())]
        async with self._redis.pipeline(transaction=False) as pipeline:
            pipeline.eval(_ADMIT, 1, self._stream, *args)
            if self._replicas:
                pipeline.wait(self._replicas, self._replica_timeout_ms)
            replies = await pipeline.execute()
        admitted, value = replies[0]
        if not admitted:
            raise QueueFull(int(value), self._maxlen)
        if self._replicas and replies[1] < self._replicas:
            raise NotReplicated(str(value), replies[1], self._replicas)
        return str(value)

    async def read(
        self,
        consumer: str,
        finished: Finished | None = None,
        events: Sequence[Mapping[str, str]] = (),
        block: bool = True,
    ) -> list[Delivery]:
        """Tasks never delivered before, waiting up to block_ms for them unless block is False.

        The acks and events of the previous batch, then `events`, go first in the same round
        trip: a worker reading ahead announces the batch it is about to run with this read.
        """
        async with self._redis.pipeline(transaction=False) as pipeline:
            acks = self._queue_ack(pipeline, consumer, finished)
            for event in events:
                self._queue_event(pipeline, event)
            pipeline.xreadgroup(
                self._group,
                consumer,
                {self._stream: ">"},
                count=self._batch_size,
                block=self._block_ms if block else None,
            )
            replies = await pipeline.execute(raise_on_error=False)
        await self._settle(replies, acks)
        return [
            Delivery(entry_id, fields, 1) for entry_id, fields in first_stream_entries(replies[-1])
        ]

    async def ack(
        self,
        consumer: str,
        finished: Finished | None,
        events: Sequence[Mapping[str, str]] = (),
    ) -> None:
        """Ack handled tasks and publish their events, then `events`, in a round trip of
        their own."""
        async with self._redis.pipeline(transaction=False) as pipeline:
            acks = self._queue_ack(pipeline, consumer, finished)
            for event in events:
                self._queue_event(pipeline, event)
            if acks is None and not events:
                return
            replies = await pipeline.execute(raise_on_error=False)
        await self._settle(replies, acks)

    def _queue_ack(
        self, pipeline: Pipeline, consumer: str, finished: Finished | None
    ) -> tuple[list[str], list[str | int]] | None:
        if finished is None or not finished.entry_ids:
            return None
        keys = [self._stream, self._counters]
        # The script checks ownership over the range from the first id to the last.
        ids = sorted(finished.entry_ids, key=parse_entry_id)
        args: list[str | int] = [self._group, consumer, self._maxlen, *ids]
        pipeline.evalsha(self._ack.sha, len(keys), *keys, *args)
        for event in finished.events:
            self._queue_event(pipeline, event)
        return keys, args

    def _queue_event(self, pipeline: Pipeline, event: Mapping[str, str]) -> None:
        pipeline.xadd(self._events, xadd_fields(event), maxlen=self._maxlen, approximate=True)

    async def _settle(
        self, replies: list[Any], acks: tuple[list[str], list[str | int]] | None
    ) -> None:
        """Raise the first error of a pipeline, after acking again where only NOSCRIPT failed.

        EVALSHA saves sending the script every batch; after a Redis restart the script is
        gone, and the other commands of the pipeline have run all the same.
        """
        if acks is not None and isinstance(replies[0], NoScriptError):
            keys, args = acks
            replies[0] = await self._ack(keys=keys, args=args)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if acks is not None and replies[0]:
            lost = replies[0]
            log.warning(
                "%d finished task(s) no longer pending for this worker (reclaimed by another,"
                " or acked by an attempt whose reply was lost): %s",
                len(lost),
                lost,
            )

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
        kept = await self._renew(keys=[self._stream], args=[self._group, consumer, *ids])
        return [str(entry_id) for entry_id in kept]

    async def retry(
        self, consumer: str, delivery: Delivery, task: Task, events: Sequence[Mapping[str, str]]
    ) -> bool:
        """Add the task again with its new retry count and ack this delivery, atomically."""
        return await self._move_owned(
            consumer, delivery.entry_id, self._stream, task.to_fields(), "retried", events
        )

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
            if not name.startswith(DLQ_PREFIX)
        }
        letter.update(
            {
                "dlq_reason": reason,
                "dlq_attempts": str(attempts),
                "dlq_original_id": delivery.entry_id,
                "dlq_at": utc_now_iso(),
            }
        )
        return await self._move_owned(
            consumer, delivery.entry_id, self._dead_letters, letter, "dead_lettered", events
        )

    async def _move_owned(
        self,
        consumer: str,
        entry_id: str,
        target: str,
        fields: Mapping[str, str],
        counter: str,
        events: Sequence[Mapping[str, str]],
    ) -> bool:
        args: list[str | int] = [self._group, consumer, entry_id, counter, self._maxlen]
        args += [2 * len(fields), *_flatten(fields)]
        for event in events:
            args += [2 * len(event), *_flatten(event)]
        moved = await self._move(
            keys=[self._stream, target, self._counters, self._events], args=args
        )
        return bool(moved)

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
        new_id = await self._requeue(keys=[self._dead_letters, self._stream], args=[entry_id])
        return str(new_id) if new_id else None
