"""The worker's concurrency, shared rate limit, retry backoff and handler context, through
the real worker process against a real redis-server."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from service.tasks.task_format import task_fields
from tests.service.handlers import (
    ATTEMPT_TIMES_KEY,
    CALLS_KEY,
    HANDLED_KEY,
    MOST_AT_ONCE_KEY,
)
from tests.support.processes import service_env, start_worker
from tests.support.task_events import event_data as events

QUEUE = "shield:ingestion_queue"
HANDLERS = "tests.service.handlers"


def enqueue(client: redis.Redis, count: int, content: str = "0") -> list[str]:
    chunks = [f"c{index}" for index in range(count)]
    for chunk in chunks:
        client.xadd(QUEUE, task_fields(job_id="job", chunk_id=chunk, content=content))
    return chunks


@pytest.mark.parametrize(
    "handler", ["sleep_counting_concurrency", "sync_sleep_counting_concurrency"]
)
def test_a_worker_runs_concurrency_tasks_at_once_and_no_more(
    handler: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    env = service_env(
        redis_server.url,
        block_ms=200,
        task_handler=f"{HANDLERS}:{handler}",
        worker_concurrency=6,
        batch_size=4,
    )
    chunks = enqueue(redis_client, 24, content="0.3")
    workers.append(start_worker(env))
    wait_until(lambda: redis_client.llen(HANDLED_KEY) == 24, timeout_s=20)
    assert sorted(redis_client.lrange(HANDLED_KEY, 0, -1)) == sorted(chunks)
    assert redis_client.get(MOST_AT_ONCE_KEY) == "6"
    wait_until(lambda: redis_client.xpending(QUEUE, "lightrag-workers")["pending"] == 0)
    # Every task announced once and completed once.
    started = [
        chunk for event in events(redis_client, "ingestion.started") for chunk in event["chunk_ids"]
    ]
    completed = [
        chunk
        for event in events(redis_client, "ingestion.completed")
        for chunk in event["chunk_ids"]
    ]
    assert sorted(started) == sorted(completed) == sorted(chunks)


def test_the_rate_limit_holds_across_two_workers(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    env = service_env(
        redis_server.url,
        block_ms=200,
        task_handler=f"{HANDLERS}:record_call_time",
        handler_rate_per_s=5,
    )
    enqueue(redis_client, 20)
    workers += [start_worker(env, consumer="a"), start_worker(env, consumer="b")]
    wait_until(lambda: redis_client.llen(HANDLED_KEY) == 20, timeout_s=30)
    calls = sorted(float(value) for value in redis_client.lrange(CALLS_KEY, 0, -1))
    # A bucket of one second's worth (5), refilled at 5 per second: 20 calls need 3 s at least,
    # and no window of one second holds more than 5 + 5.
    assert calls[-1] - calls[0] >= 2.8
    for index, first in enumerate(calls):
        assert sum(1 for call in calls[index:] if call < first + 1.0) <= 10
    # Held back, not failed: nothing was retried.
    assert events(redis_client, "ingestion.failed") == []


def test_failed_attempts_come_back_after_their_backoff(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    env = service_env(
        redis_server.url,
        block_ms=5000,
        task_handler=f"{HANDLERS}:fail_twice_noting_times",
        retry_backoff_ms=400,
        retry_backoff_max_ms=10_000,
    )
    enqueue(redis_client, 1)
    workers.append(start_worker(env))
    wait_until(lambda: redis_client.llen(HANDLED_KEY) == 1, timeout_s=20)
    first, second, third = (float(value) for value in redis_client.lrange(ATTEMPT_TIMES_KEY, 0, -1))
    # Retry 1 waits 200-400 ms, retry 2 waits 400-800 ms (plus at most a promote poll of slack).
    assert 0.19 <= second - first < 1.5
    assert 0.39 <= third - second < 2.0
    failed = events(redis_client, "ingestion.failed")
    assert [event["attempt"] for event in failed] == [1, 2]
    assert all(event["retrying"] for event in failed)
    retry_at = datetime.fromisoformat(str(failed[0]["retry_at"])).timestamp()
    assert abs(retry_at - second) < 1.0
    assert redis_client.zcard("shield:ingestion_queue:delayed") == 0


def test_retry_after_from_the_context_is_not_a_failed_attempt(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    env = service_env(
        redis_server.url, block_ms=200, task_handler=f"{HANDLERS}:busy_once_then_record"
    )
    enqueue(redis_client, 1)
    workers.append(start_worker(env))
    wait_until(lambda: redis_client.llen(HANDLED_KEY) == 1, timeout_s=20)
    first, second = (float(value) for value in redis_client.lrange(ATTEMPT_TIMES_KEY, 0, -1))
    assert 0.95 <= second - first < 3.0
    [busy] = events(redis_client, "ingestion.failed")
    assert busy["busy"] is True and busy["attempt"] == 0 and busy["retrying"] is True
    # The task came back with its retry count unchanged: no attempt was used up.
    retry_counts = [fields["retry_count"] for _, fields in redis_client.xrange(QUEUE)]
    assert retry_counts == ["0", "0"]
    assert redis_client.hget("shield:ingestion_queue:counters", "deferred") == "1"


def test_progress_from_the_context_is_an_event_after_the_start(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    env = service_env(redis_server.url, block_ms=200, task_handler=f"{HANDLERS}:report_progress")
    enqueue(redis_client, 1)
    workers.append(start_worker(env))
    wait_until(lambda: len(events(redis_client, "ingestion.completed")) == 1)
    time.sleep(0.3)
    types = [fields["type"] for _, fields in redis_client.xrange("shield:events")]
    flow = [kind for kind in types if kind.startswith("ingestion.") and kind != "ingestion.queued"]
    assert flow[0] == "ingestion.started"
    progress = events(redis_client, "ingestion.progress")
    assert [(event["progress"], event["message"]) for event in progress] == [
        (0.5, "half way"),
        (1.0, ""),
    ]
    assert all(event["chunk_id"] == "c0" for event in progress)
