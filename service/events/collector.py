"""The metrics-collector group's reader, run in its own process beside the workers.

``python -m service.collector`` (service/collector.py) runs it. It reads both streams through
the group ``metrics-collector`` (each collector process a consumer of its own, so together
they read everything once), folds what it read (service.events.collected) into histograms
and counts kept in Redis, and acks. The API's /metrics and /events/stats read them from
there, so the group that the original design created is read and its lag means something.
Recording and acking are one MULTI: a crash between them cannot count a batch twice. Entries
a dead process left pending are claimed after a minute. The loop is supervised: a failure
restarts it with backoff, and ``running`` says so meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from service.core import names
from service.core.instruments import JOB_BUCKETS_S, LATENCY_BUCKETS_S
from service.core.lua import Args, LuaScript
from service.core.redis_replies import Entry, entries, fields
from service.core.settings import Settings
from service.events.bus import stop_task
from service.events.collected import CollectedBatch, bucket_bound, fold, summarize

log = logging.getLogger(__name__)

READ_COUNT = 500
RESTART_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
# A dead process's pending entries are claimed once idle this long.
CLAIM_IDLE_MS = 60_000
CLAIM_EVERY_S = 30.0


class MetricsCollector:
    """Reads both streams in the metrics-collector group as `consumer`."""

    def __init__(self, redis: Redis, settings: Settings, consumer: str) -> None:
        self._redis = redis
        self._settings = settings
        self._consumer = consumer
        self._group = names.METRICS_GROUP
        self._streams = (settings.stream_ingestion, settings.stream_events)
        self._close_jobs = LuaScript(redis, "service.events", "close_jobs")
        self._task: asyncio.Task[None] | None = None
        self._next_claim = 0.0
        self._stopping = False
        self.running = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="metrics-collector")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await stop_task(self._task)

    async def _supervise(self) -> None:
        failures = 0
        # Checked, not only cancelled: see service.events.bus.stop_task.
        while not self._stopping:
            try:
                self.running = True
                await self.collect_once()
                failures = 0
            except (RedisError, OSError) as error:
                self.running = False
                if self._stopping:
                    return
                delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
                failures += 1
                log.warning("metrics collector: %s; again in %.1fs", error, delay)
                await asyncio.sleep(delay)

    async def collect_once(self, block_ms: int | None = None) -> int:
        """Read, fold, record and ack one batch of both streams; how many entries."""
        tasks, events = await self._claim_stale() if self._claim_due() else ([], [])
        if not tasks and not events:
            tasks, events = await self._read(block_ms)
        if not tasks and not events:
            return 0
        batch = fold(tasks, events)
        async with self._redis.pipeline(transaction=True) as pipeline:
            self._record(pipeline, batch)
            for stream, read in zip(self._streams, (tasks, events), strict=True):
                if read:
                    pipeline.xack(stream, self._group, *(entry_id for entry_id, _ in read))
            await pipeline.execute()
        jobs = sorted(set(batch.settled_by_job) | set(batch.queued_by_job))
        if jobs:
            args: Args = [int(time.time() * 1000), len(JOB_BUCKETS_S)]
            args += [repr(float(bound)) for bound in JOB_BUCKETS_S]
            args += jobs
            keys = [
                names.OPEN_JOBS_QUEUED_KEY,
                names.OPEN_JOBS_SETTLED_KEY,
                names.OPEN_JOBS_FIRST_MS_KEY,
                names.JOB_DURATION_KEY,
            ]
            await self._close_jobs(keys, args)
        return len(tasks) + len(events)

    async def _read(self, block_ms: int | None) -> tuple[list[Entry], list[Entry]]:
        reply = await self._redis.xreadgroup(
            self._group,
            self._consumer,
            dict.fromkeys(self._streams, ">"),
            count=READ_COUNT,
            block=self._settings.block_ms if block_ms is None else block_ms,
        )
        read: dict[str, list[Entry]] = {stream: [] for stream in self._streams}
        for stream_reply in reply or []:
            stream, stream_entries = stream_reply[0], stream_reply[1]
            read[str(stream)] = entries(stream_entries)
        return read[self._streams[0]], read[self._streams[1]]

    def _claim_due(self) -> bool:
        if time.monotonic() < self._next_claim:
            return False
        self._next_claim = time.monotonic() + CLAIM_EVERY_S
        return True

    async def _claim_stale(self) -> tuple[list[Entry], list[Entry]]:
        claimed: list[list[Entry]] = []
        for stream in self._streams:
            reply = await self._redis.xautoclaim(
                stream, self._group, self._consumer, CLAIM_IDLE_MS, "0-0", count=READ_COUNT
            )
            claimed.append(entries(reply[1]))
        return claimed[0], claimed[1]

    @staticmethod
    def _record(pipeline: Pipeline, batch: CollectedBatch) -> None:
        for seconds in batch.task_latencies_s:
            pipeline.hincrby(names.TASK_LATENCY_KEY, bucket_bound(seconds, LATENCY_BUCKETS_S), 1)
        if batch.task_latencies_s:
            pipeline.hincrby(names.TASK_LATENCY_KEY, "count", len(batch.task_latencies_s))
            pipeline.hincrbyfloat(names.TASK_LATENCY_KEY, "sum", sum(batch.task_latencies_s))
        for event_type, count in batch.events_by_type.items():
            pipeline.hincrby(names.EVENT_TYPES_KEY, event_type, count)
        for job_id, count in batch.queued_by_job.items():
            pipeline.hincrby(names.OPEN_JOBS_QUEUED_KEY, job_id, count)
            pipeline.hsetnx(names.OPEN_JOBS_FIRST_MS_KEY, job_id, batch.first_queued_ms[job_id])
        for job_id, count in batch.settled_by_job.items():
            pipeline.hincrby(names.OPEN_JOBS_SETTLED_KEY, job_id, count)


async def read_collected(redis: Redis) -> dict[str, object]:
    """The collector's figures, as /events/stats shows them."""
    async with redis.pipeline(transaction=False) as pipeline:
        for key in (names.TASK_LATENCY_KEY, names.JOB_DURATION_KEY, names.EVENT_TYPES_KEY):
            pipeline.hgetall(key)
        latency, jobs, types = await pipeline.execute()
    return summarize(fields(latency), fields(jobs), fields(types))
