"""RedisStreamsClient: the original module's methods over TaskQueue and the event bus."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from service.core import names
from service.core.consumer_groups import ensure_all_groups, expected_groups
from service.core.redis_client import create_redis
from service.core.redis_replies import first_stream_entries
from service.core.settings import Settings
from service.core.stream_probe import read_stream_infos
from service.core.stream_stats import fold_health
from service.events.bus import EventPublisher, GroupEventConsumer
from service.events.wire import Event, UnreadableEntry
from service.tasks.leases import LeaseKeeper
from service.tasks.ledger import DeliveryLedger
from service.tasks.processor import batch_event_fields
from service.tasks.task_format import MalformedTask, Task, decode_task
from service.tasks.task_queue import Delivery, Finished, TaskQueue
from shield_client.errors import ServiceGroup

log = logging.getLogger(__name__)

# Renew held tasks this many times per claim_idle_ms, as the service's worker does.
LEASE_RENEWALS_PER_IDLE_TIME = 3


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisStreamsClient:
    """One consumer's view of the task and event streams.

    Settings are the service's own (``SHIELD_*`` variables, or keyword overrides such as
    ``redis_url=``), so a client and a deployed service agree on every name.
    """

    def __init__(
        self, consumer: str | None = None, settings: Settings | None = None, **overrides: Any
    ) -> None:
        self.settings = settings or Settings(**overrides)
        self.consumer = consumer or _default_consumer()
        self._redis: Redis = create_redis(self.settings)
        self._queue = TaskQueue(self._redis, self.settings)
        self._publisher = EventPublisher(
            self._redis, self.settings.stream_events, self.settings.stream_maxlen
        )
        self._ledger = DeliveryLedger(lease_max_s=self.settings.lease_max_ms / 1000)
        self._held: dict[str, Task] = {}
        self._leases = LeaseKeeper(
            self.settings,
            lambda: create_redis(self.settings, max_connections=1),
            self.consumer,
            self._ledger,
            interval_s=self.settings.claim_idle_ms / 1000 / LEASE_RENEWALS_PER_IDLE_TIME,
        )
        self._leases_started = False
        self._queues_by_wait_ms: dict[int, TaskQueue] = {}
        self._own_groups: set[str] = set()

    async def __aenter__(self) -> RedisStreamsClient:
        await ensure_all_groups(self._redis, self.settings)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop renewing held tasks (they become reclaimable) and close the connections."""
        if self._leases_started:
            self._leases.stop()
        await self._redis.aclose()

    # Tasks -------------------------------------------------------------------------------

    async def add_task(
        self,
        job_id: str,
        chunk_id: str,
        content: str,
        source_uri: str = "",
        source_type: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue one task; its entry id. Raises QueueFull while the backlog is at its cap."""
        task = Task(
            job_id=job_id,
            chunk_id=chunk_id,
            content=content,
            source_uri=source_uri,
            source_type=source_type,
            metadata=dict(metadata or {}),
        )
        return await self._queue.enqueue(task)

    async def read_tasks(
        self, count: int | None = None, block_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """New tasks for this consumer, as handler payloads (with ``message_id``), waiting up
        to `block_ms` (default SHIELD_BLOCK_MS; 0 waits not at all) when none is there.

        What is read is begun, as the service's worker begins it: its chunk counts running in
        its job, and a task of a cancelled job is acked as cancelled and not returned. Each
        task returned is held, its lease renewed in the background, until ack_task (or close).
        A malformed entry goes to the dead letters, as the service's worker would send it.
        """
        wait_ms = self.settings.block_ms if block_ms is None else block_ms
        if wait_ms < 0:
            raise ValueError(f"block_ms must be 0 or more, not {block_ms}")
        limit = count or self.settings.batch_size
        # One script reads and begins what is there; only an empty read waits.
        deliveries = await self._queue.read(self.consumer, block=False, count=limit)
        if not deliveries and wait_ms > 0:
            deliveries = await self._waiting_queue(wait_ms).read(
                self.consumer, block=True, count=limit
            )
            # Not decoded yet: the script reads each entry's job and chunk itself.
            undecoded = [(delivery.entry_id, "", "") for delivery in deliveries]
            cancelled = set(await self._queue.begin(self.consumer, undecoded))
            deliveries = [d for d in deliveries if d.entry_id not in cancelled]
        self._ledger.receive(delivery.entry_id for delivery in deliveries)
        tasks = [task for delivery in deliveries if (task := await self._screen(delivery))]
        for task in tasks:
            self._ledger.start(task.message_id)
            self._held[task.message_id] = task
        if tasks and not self._leases_started:
            self._leases.start()
            self._leases_started = True
        await self._queue.ack(self.consumer, None, batch_event_fields("ingestion.started", tasks))
        return [task.as_handler_payload() for task in tasks]

    def _waiting_queue(self, wait_ms: int) -> TaskQueue:
        """The task queue whose blocking read waits `wait_ms`: TaskQueue.read waits its
        settings' block_ms, so a caller's own wait gets a queue of its own (no I/O made)."""
        queue = self._queues_by_wait_ms.get(wait_ms)
        if queue is None:
            waiting = self.settings.model_copy(update={"block_ms": wait_ms})
            queue = self._queues_by_wait_ms[wait_ms] = TaskQueue(self._redis, waiting)
        return queue

    async def _screen(self, delivery: Delivery) -> Task | None:
        try:
            return decode_task(delivery.entry_id, delivery.fields)
        except MalformedTask as error:
            self._ledger.moving(delivery.entry_id)
            await self._queue.dead_letter(self.consumer, delivery, f"malformed: {error}", 0, [])
            self._ledger.moved(delivery.entry_id)
            return None

    async def ack_task(self, message_id: str) -> bool:
        """Ack a task this consumer holds; False when another consumer took it meanwhile
        (this consumer stopped renewing it, or held it past lease_max_ms)."""
        task = self._held.pop(message_id, None)
        if task is None or not self._ledger.finish(message_id, task):
            return False
        self._ledger.sending_acks()
        lost = await self._queue.ack(
            self.consumer,
            Finished([message_id], batch_event_fields("ingestion.completed", [task])),
        )
        self._ledger.acked([message_id])
        return message_id not in lost

    async def get_queue_depth(self) -> int:
        """Entries on the task stream (XLEN), as the original counted them."""
        depth: int = await self._redis.xlen(self.settings.stream_ingestion)
        return depth

    # Events ------------------------------------------------------------------------------

    async def emit_event(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        job_id: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Add an event to the events stream; its entry id."""
        event = Event(
            type=event_type, job_id=job_id, data=dict(data or {}), metadata=dict(metadata or {})
        )
        return await self._publisher.publish(event)

    async def read_events(
        self,
        group: str,
        last_id: str = ">",
        count: int | None = None,
        block_ms: int | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events for this consumer in `group`, a group of the caller's own: new ones (``>``),
        or, with a replay id, this consumer's own unacked history after it. Each as (entry id,
        event dict). The group is made on first use, at the stream's end (events added from
        then on); a group the service reads itself raises ServiceGroup."""
        await self._own_group(group)
        wait_ms = self.settings.block_ms if block_ms is None else block_ms
        limit = count or self.settings.batch_size
        if last_id == ">" and wait_ms > 0:
            reader = GroupEventConsumer(
                self._redis, self.settings.stream_events, group, self.consumer, limit, wait_ms
            )
            return [(entry_id, _as_dict(event)) for entry_id, event in await reader.read()]
        # No BLOCK at all: XREADGROUP's BLOCK 0 would wait forever.
        reply = await self._redis.xreadgroup(
            group, self.consumer, {self.settings.stream_events: last_id}, count=limit
        )
        read: list[tuple[str, dict[str, Any]]] = []
        for entry_id, fields in first_stream_entries(reply):
            try:
                read.append((entry_id, _as_dict(Event.from_fields(fields))))
            except UnreadableEntry as error:
                # As the service's group readers do: skipped, and acked so it is not met again.
                log.warning("group %s skips event entry %s: %s", group, entry_id, error)
                await self._redis.xack(self.settings.stream_events, group, entry_id)
        return read

    async def ack_event(self, message_id: str, group: str) -> int:
        """Acknowledge one event in `group`, a group of the caller's own (see read_events)."""
        await self._own_group(group)
        acked: int = await self._redis.xack(self.settings.stream_events, group, message_id)
        return acked

    async def _own_group(self, group: str) -> None:
        """Refuse the service's own event groups; make the caller's group once, if new."""
        if group in self.settings.event_groups or group == names.METRICS_GROUP:
            raise ServiceGroup(group)
        if group in self._own_groups:
            return
        try:
            await self._redis.xgroup_create(
                self.settings.stream_events, group, id="$", mkstream=True
            )
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._own_groups.add(group)

    # Health ------------------------------------------------------------------------------

    async def check_redis_health(self) -> dict[str, Any]:
        """``/health/detailed``'s document, read by this client: up, degraded or down."""
        started = time.perf_counter()
        try:
            await self._redis.ping()
            streams = [self.settings.stream_ingestion, self.settings.stream_events]
            infos = await read_stream_infos(self._redis, streams)
        except (RedisError, OSError) as error:
            # As /health/detailed answers a caller allowed to see details: down, and why.
            return {"status": "down", "error": str(error)}
        latency_ms = (time.perf_counter() - started) * 1000
        return fold_health(infos, expected_groups(self.settings), latency_ms)


def _as_dict(event: Event) -> dict[str, Any]:
    return {
        "type": event.type,
        "event_id": event.event_id,
        "job_id": event.job_id,
        "timestamp": event.timestamp,
        "data": dict(event.data),
        "metadata": dict(event.metadata),
    }
