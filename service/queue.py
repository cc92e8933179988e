"""The durable task queue on the ingestion stream: enqueue, read, ack, reclaim, retry, dead letter.

Delivery is at least once. A worker acks only after its handler succeeded; a task that is
neither acked nor moved stays pending in the group and is reclaimed with XAUTOCLAIM once it has
been idle for ``claim_idle_ms``. Moving a task (to a retry entry or to the dead-letter stream)
and acking it happen in one MULTI, so a crash in between neither loses nor doubles it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.config import Settings
from service.events import utc_now_iso
from service.replies import entries, first_stream_entries, xadd_fields

# Dead-letter metadata is stored beside the task's own fields under this prefix.
DLQ_PREFIX = "dlq_"

# Atomically copies a dead letter back onto the task stream, with a fresh retry count and
# without its dlq_* fields, and deletes it; returns false when the id is not there.
_REQUEUE_SCRIPT = """
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
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A task entry handed to this consumer, with the number of times it has been delivered."""

    entry_id: str
    fields: Mapping[str, str]
    deliveries: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task that the queue gave up on."""

    entry_id: str
    reason: str
    attempts: int
    original_id: str
    dead_lettered_at: str
    fields: dict[str, str]

    @classmethod
    def from_entry(cls, entry_id: str, fields: Mapping[str, str]) -> DeadLetter:
        meta = {name: value for name, value in fields.items() if name.startswith(DLQ_PREFIX)}
        try:
            attempts = int(meta.get("dlq_attempts", "0"))
        except ValueError:
            attempts = 0
        return cls(
            entry_id=entry_id,
            reason=meta.get("dlq_reason", ""),
            attempts=attempts,
            original_id=meta.get("dlq_original_id", ""),
            dead_lettered_at=meta.get("dlq_at", ""),
            fields={name: value for name, value in fields.items() if name not in meta},
        )


class TaskQueue:
    """Operations on the task stream for one consumer group."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._stream = settings.stream_ingestion
        self._group = settings.worker_group
        self._dead_letters = settings.dead_letter_stream
        self._counters = settings.worker_counters_key
        self._maxlen = settings.stream_maxlen
        self._batch_size = settings.batch_size
        self._block_ms = settings.block_ms
        self._claim_idle_ms = settings.claim_idle_ms
        self._requeue = redis.register_script(_REQUEUE_SCRIPT)

    async def enqueue(self, fields: Mapping[str, str]) -> str:
        """XADD one task with approximate trimming."""
        entry_id = await self._redis.xadd(
            self._stream, xadd_fields(fields), maxlen=self._maxlen, approximate=True
        )
        return str(entry_id)

    async def read_new(
        self, consumer: str, before: Callable[[Any], None] | None = None
    ) -> list[Delivery]:
        """Tasks never delivered before; blocks up to block_ms.

        `before` may queue commands (acks of the previous batch) that travel in the same
        round trip, ahead of the read.
        """
        async with self._redis.pipeline(transaction=False) as pipeline:
            if before is not None:
                before(pipeline)
            pipeline.xreadgroup(
                self._group,
                consumer,
                {self._stream: ">"},
                count=self._batch_size,
                block=self._block_ms,
            )
            reply = (await pipeline.execute())[-1]
        return [Delivery(entry_id, fields, 1) for entry_id, fields in first_stream_entries(reply)]

    async def reclaim(self, consumer: str) -> list[Delivery]:
        """Take over the oldest task left pending by a consumer idle for claim_idle_ms.

        One at a time: XAUTOCLAIM raises the delivery count of every entry it claims, so
        claiming a batch would charge a poison task's crashes to its innocent neighbours.
        """
        reply = await self._redis.xautoclaim(
            self._stream,
            self._group,
            consumer,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=1,
        )
        claimed = entries(reply[1])
        if not claimed:
            return []
        pending = await self._redis.xpending_range(
            self._stream,
            self._group,
            min=claimed[0][0],
            max=claimed[-1][0],
            count=len(claimed),
            consumername=consumer,
        )
        deliveries = {row["message_id"]: int(row["times_delivered"]) for row in pending}
        return [
            Delivery(entry_id, fields, deliveries.get(entry_id, 1)) for entry_id, fields in claimed
        ]

    def ack_in(self, pipeline: Any, entry_ids: list[str]) -> None:
        """Queue the ack of handled tasks and their count on a pipeline."""
        pipeline.xack(self._stream, self._group, *entry_ids)
        pipeline.hincrby(self._counters, "acked", len(entry_ids))

    def retry_in(self, transaction: Any, delivery: Delivery, retry_count: int) -> None:
        """Queue a requeue with a higher retry count plus the ack, inside a MULTI."""
        fields = dict(delivery.fields)
        fields["retry_count"] = str(retry_count)
        transaction.xadd(self._stream, fields, maxlen=self._maxlen, approximate=True)
        transaction.xack(self._stream, self._group, delivery.entry_id)
        transaction.hincrby(self._counters, "retried", 1)

    def dead_letter_in(
        self, transaction: Any, delivery: Delivery, reason: str, attempts: int
    ) -> None:
        """Queue the move to the dead-letter stream plus the ack, inside a MULTI."""
        fields = {
            name: value for name, value in delivery.fields.items() if not name.startswith("dlq_")
        }
        fields.update(
            {
                "dlq_reason": reason,
                "dlq_attempts": str(attempts),
                "dlq_original_id": delivery.entry_id,
                "dlq_at": utc_now_iso(),
            }
        )
        transaction.xadd(self._dead_letters, fields, maxlen=self._maxlen, approximate=True)
        transaction.xack(self._stream, self._group, delivery.entry_id)
        transaction.hincrby(self._counters, "dead_lettered", 1)

    async def dead_letters(self, count: int, after: str | None = None) -> list[DeadLetter]:
        """The oldest dead letters, optionally strictly after an entry id."""
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
            keys=[self._dead_letters, self._stream], args=[entry_id, self._maxlen]
        )
        return str(new_id) if new_id else None
