"""Retries waiting in Redis survive the death of every worker and a Redis restart: no task
that got a 201 is lost, with concurrent workers and a rate limit."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tests.faults.handlers import COMPLETIONS_KEY
from tests.support.job_submission import post_tasks
from tests.support.live_server import serve
from tests.support.processes import service_env, start_worker, stop
from tests.support.service_settings import make_settings

pytestmark = pytest.mark.slow

QUEUE, GROUP = "shield:ingestion_queue", "lightrag-workers"
DELAYED = "shield:ingestion_queue:delayed"
TASKS = 300


def test_retries_survive_sigkilled_workers_and_a_redis_restart_with_nothing_lost(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list[subprocess.Popen[str]]
) -> None:
    with serve(make_settings(redis_server)) as base_url:
        post_tasks(base_url, "job", TASKS)
    env = service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=1000,
        task_handler="tests.faults.handlers:fail_first_then_count",
        # Long enough that most first failures are still waiting when the workers die.
        retry_backoff_ms=4000,
        worker_concurrency=16,
        handler_rate_per_s=400,
    )
    log = open(redis_server.workdir / "workers.log", "a")  # noqa: SIM115 - closed at the end
    try:
        workers += [start_worker(env, log=log) for _ in range(2)]
        wait_until(lambda: redis_client.zcard(DELAYED) >= TASKS // 2, timeout_s=30)
        for worker in workers:
            stop(worker, signal.SIGKILL)
        waiting = redis_client.zcard(DELAYED)
        time.sleep(1.1)  # appendfsync everysec
        redis_server.restart()
        assert redis_client.zcard(DELAYED) == waiting
        workers += [start_worker(env, log=log) for _ in range(2)]
        wait_until(lambda: redis_client.hlen(COMPLETIONS_KEY) == TASKS, timeout_s=60)
        wait_until(
            lambda: (
                redis_client.zcard(DELAYED) == 0
                and redis_client.xpending(QUEUE, GROUP)["pending"] == 0
            ),
            timeout_s=30,
        )
    finally:
        log.close()
    completions = {
        chunk: int(count) for chunk, count in redis_client.hgetall(COMPLETIONS_KEY).items()
    }
    assert set(completions) == {f"c{i}" for i in range(TASKS)}
    assert redis_client.xlen("shield:ingestion_queue:dlq") == 0
    duplicates = sum(count - 1 for count in completions.values())
    # A SIGKILL between a handler's success and its ack is the only way to run twice.
    assert duplicates <= 32, duplicates
