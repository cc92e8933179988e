"""Retries wait, in Redis: backoff delays, the delayed set, promotion, the shared rate limit,
and the ingestion.queued event, against a real redis-server."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from service.core.consumer_groups import ensure_all_groups
from service.core.redis_client import create_redis
from service.core.settings import Settings
from service.tasks.backoff import backoff_ms
from service.tasks.rate_limit import HandlerRateLimit
from service.tasks.task_format import Task, decode_task
from service.tasks.task_queue import Delivery, TaskQueue
from tests.service.handlers import FAIL_MARK, HANDLED_KEY
from tests.support.live_server import http
from tests.support.processes import service_env, start_worker, stop
from tests.support.service_settings import make_settings
from tests.support.task_events import event_data

QUEUE, GROUP = "shield:ingestion_queue", "lightrag-workers"
DELAYED = "shield:ingestion_queue:delayed"


@pytest.mark.parametrize(
    ("retry", "draw", "expected_ms"),
    [
        (1, 0.0, 500),
        (1, 0.999999, 999),
        (2, 0.0, 1000),
        (3, 0.5, 3000),
        (9, 0.0, 128_000),
        # Capped at retry_backoff_max_ms, jitter still between half and all of it.
        (10, 0.0, 150_000),
        (40, 0.999999, 299_999),
    ],
)
def test_the_nth_retry_waits_between_half_and_all_of_the_capped_doubling(
    retry: int, draw: float, expected_ms: int
) -> None:
    assert backoff_ms(retry, 1000, 300_000, lambda: draw) == expected_ms


@pytest.fixture
async def queue(
    redis_server: RedisServer, redis_client: redis.Redis
) -> AsyncIterator[tuple[TaskQueue, Settings]]:
    settings = make_settings(redis_server, handler_rate_per_s=5)
    client = create_redis(settings)
    await ensure_all_groups(client, settings)
    try:
        yield TaskQueue(client, settings), settings
    finally:
        await client.aclose()


async def delivered(queue: TaskQueue, chunk_id: str) -> Delivery:
    await queue.enqueue(Task(job_id="j", chunk_id=chunk_id, content="x"))
    [delivery] = await queue.read("w1", block=False)
    return delivery


async def test_enqueue_announces_the_task_in_the_same_script(
    queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    task_queue, _ = queue
    entry_id = await task_queue.enqueue(Task(job_id="job-q", chunk_id="c1", content="x"))
    [(_, event)] = redis_client.xrange("shield:events")
    assert event["type"] == "ingestion.queued" and event["job_id"] == "job-q"
    assert json.loads(event["data"]) == {"message_id": entry_id, "chunk_id": "c1"}


async def test_a_deferred_task_waits_outside_the_stream_and_comes_back_when_due(
    queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    task_queue, _ = queue
    delivery = await delivered(task_queue, "later")
    retried = Task(job_id="j", chunk_id="later", content="x", retry_count=1)
    due_ms = int(time.time() * 1000) + 600
    assert await task_queue.defer("w1", delivery, retried, due_ms, "retried", [])
    # Acked and held in the sorted set: pending under nobody, so no reclaim can take it.
    assert redis_client.xpending(QUEUE, GROUP)["pending"] == 0
    assert redis_client.zscore(DELAYED, delivery.entry_id) == due_ms
    assert await task_queue.waiting_count() == 1
    moved, wait_ms = await task_queue.promote()
    assert moved == 0 and wait_ms is not None and 0 < wait_ms <= 600
    time.sleep(0.7)
    assert await task_queue.promote() == (1, None)
    [again] = await task_queue.read("w1", block=False)
    assert again.fields["chunk_id"] == "later" and again.fields["retry_count"] == "1"
    assert redis_client.hget("shield:ingestion_queue:counters", "retried") == "1"
    assert await task_queue.waiting_count() == 0


async def test_a_task_another_worker_owns_is_not_deferred(
    queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    task_queue, _ = queue
    delivery = await delivered(task_queue, "taken")
    redis_client.xclaim(QUEUE, GROUP, "w2", 0, [delivery.entry_id])
    task = Task(job_id="j", chunk_id="taken", content="x", retry_count=1)
    assert not await task_queue.defer("w1", delivery, task, 0, "retried", [])
    assert redis_client.zcard(DELAYED) == 0


async def test_a_waiting_retry_survives_a_redis_restart_with_aof(
    queue: tuple[TaskQueue, Settings], redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    task_queue, _ = queue
    delivery = await delivered(task_queue, "durable")
    task = Task(job_id="j", chunk_id="durable", content="x", retry_count=1)
    await task_queue.defer("w1", delivery, task, int(time.time() * 1000) + 300, "retried", [])
    time.sleep(1.1)  # appendfsync everysec
    redis_server.restart()
    time.sleep(0.3)
    moved, _ = await task_queue.promote()
    assert moved == 1
    [(_, fields)] = redis_client.xrange(QUEUE, f"({delivery.entry_id}", "+")
    assert fields["chunk_id"] == "durable" and fields["retry_count"] == "1"


async def test_the_rate_limit_holds_one_seconds_worth_and_refills(
    queue: tuple[TaskQueue, Settings], redis_server: RedisServer
) -> None:
    _, settings = queue
    first, second = create_redis(settings), create_redis(settings)
    try:
        # Two workers' limiters share one bucket of 5 calls per second.
        limits = [HandlerRateLimit(first, settings), HandlerRateLimit(second, settings)]
        started = time.monotonic()
        for index in range(5):
            assert await limits[index % 2].acquire(lambda: False)
        assert time.monotonic() - started < 0.5
        # The sixth call waits for a token, about 1/5 s.
        assert await limits[1].acquire(lambda: False)
        waited_s = time.monotonic() - started
        assert 0.15 <= waited_s < 1.0
        # A pause does not save up more than one second's worth.
        time.sleep(2.0)
        burst_started = time.monotonic()
        for _ in range(5):
            await limits[0].acquire(lambda: False)
        assert time.monotonic() - burst_started < 0.5
        await limits[0].acquire(lambda: False)
        assert time.monotonic() - burst_started >= 0.15
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_stopping_worker_stops_waiting_for_a_token(
    queue: tuple[TaskQueue, Settings],
) -> None:
    _, settings = queue
    client = create_redis(settings)
    try:
        limit = HandlerRateLimit(client, settings)
        for _ in range(5):
            await limit.acquire(lambda: False)
        assert not await limit.acquire(lambda: True)
    finally:
        await client.aclose()


async def test_a_requeued_dead_letter_starts_afresh_and_its_busy_cap_runs_from_the_requeue(
    queue: tuple[TaskQueue, Settings], redis_client: redis.Redis
) -> None:
    task_queue, _ = queue
    # Queued two hours ago, failed twice and deferred busy three times, then dead-lettered.
    queued_at = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    task = Task(job_id="j", chunk_id="old", content="x", timestamp=queued_at)
    for _ in range(3):
        task = task.deferred_busy()
    await task_queue.enqueue(task.retried(2))
    [delivery] = await task_queue.read("w1", block=False)
    assert delivery.fields["busy_count"] == "3" and delivery.fields["timestamp"] == queued_at
    assert await task_queue.dead_letter("w1", delivery, "busy for too long", 3, [])
    [letter] = await task_queue.dead_letters(10)
    assert letter.fields["busy_count"] == "3" and letter.fields["timestamp"] == queued_at

    before = datetime.now(UTC)
    new_id = await task_queue.requeue_dead_letter(letter.entry_id)
    after = datetime.now(UTC)
    assert new_id is not None
    [(_, fields)] = redis_client.xrange(QUEUE, new_id, new_id)
    requeued = decode_task(new_id, fields)
    # Redis's clock and this one are the same machine's: the timestamp is the requeue's.
    stamped = datetime.fromisoformat(requeued.timestamp)
    assert stamped.tzinfo is not None
    assert before - timedelta(seconds=1) <= stamped <= after + timedelta(seconds=1)
    assert (requeued.retry_count, requeued.busy_count) == (0, 0)
    assert "busy_count" not in fields and not any(name.startswith("dlq_") for name in fields)
    assert {name: fields[name] for name in ("job_id", "chunk_id", "content")} == {
        "job_id": "j",
        "chunk_id": "old",
        "content": "x",
    }
    assert redis_client.xlen("shield:ingestion_queue:dlq") == 0


def test_stats_count_the_tasks_waiting_for_their_retry(
    api: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: list[subprocess.Popen[str]],
) -> None:
    chunks = {"bad-1": FAIL_MARK, "fine": "x", "bad-2": FAIL_MARK}
    with http(api) as client:
        for chunk_id, content in chunks.items():
            task = {"job_id": "job-w", "chunk_id": chunk_id, "content": content}
            assert client.post("/tasks", json=task).status_code == 201
        assert client.get("/events/stats").json()["waiting_retries"] == 0
        # Each failed first attempt waits 30-60 s for its retry: long enough to be seen.
        env = service_env(
            redis_server.url,
            block_ms=200,
            task_handler="tests.service.handlers:fail_marked",
            retry_backoff_ms=60_000,
            retry_backoff_max_ms=60_000,
        )
        workers.append(start_worker(env))

        def waiting_retries() -> int:
            count: int = client.get("/events/stats").json()["waiting_retries"]
            return count

        wait_until(lambda: waiting_retries() == 2, timeout_s=20, describe="2 waiting retries")
        assert redis_client.lrange(HANDLED_KEY, 0, -1) == ["fine"]
        failed = event_data(redis_client, "ingestion.failed")
        assert sorted(str(data["chunk_id"]) for data in failed) == ["bad-1", "bad-2"]
        assert all(data["retrying"] is True and "retry_at" in data for data in failed)
        # They wait in Redis, not in the worker: still counted once it has stopped.
        assert stop(workers[0]) == 0
        assert waiting_retries() == 2
        assert redis_client.xpending(QUEUE, GROUP)["pending"] == 0
