"""10,000 tasks while workers are SIGKILLed at random: every task completes at least once,
duplicates are counted, and the dead letters are exactly the poison tasks."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest
import redis

from harness.redis_server import RedisServer
from service.tasks.task_format import task_fields
from tests.faults.handlers import COMPLETIONS_KEY
from tests.support.processes import service_env, start_worker

pytestmark = pytest.mark.slow

TASKS = 10_000
POISON = {17, 2_500, 5_000, 7_500, 9_999}
WORKERS = 3
DEADLINE_S = 300
QUEUE, DLQ, GROUP = "shield:ingestion_queue", "shield:ingestion_queue:dlq", "lightrag-workers"


def test_random_kills_lose_no_task(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: list[subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline = redis_client.pipeline(transaction=False)
    for index in range(TASKS):
        content = "poison" if index in POISON else "ok"
        pipeline.xadd(
            QUEUE, task_fields(job_id=f"job{index % 50}", chunk_id=f"c{index}", content=content)
        )
    pipeline.execute()
    env = service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=1000,
        task_handler="tests.faults.handlers:count_or_die",
    )
    chooser = random.Random(20261125)
    workers.extend(start_worker(env) for _ in range(WORKERS))
    kills = poison_deaths = 0
    deadline = time.monotonic() + DEADLINE_S
    while not _finished(redis_client):
        assert time.monotonic() < deadline, f"not finished: {_progress(redis_client)}"
        time.sleep(chooser.uniform(0.2, 0.8))
        for index, worker in enumerate(workers):
            if worker.poll() is not None:
                poison_deaths += 1
                workers[index] = start_worker(env)
        victim = chooser.randrange(WORKERS)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        kills += 1
        workers[victim] = start_worker(env)

    completions = {
        key.decode(): int(value)
        for key, value in redis.Redis(port=redis_server.port).hgetall(COMPLETIONS_KEY).items()
    }
    expected = {f"c{index}" for index in range(TASKS) if index not in POISON}
    assert set(completions) == expected
    dead = {fields["chunk_id"] for _, fields in redis_client.xrange(DLQ)}
    assert dead == {f"c{index}" for index in POISON}
    assert redis_client.xlen(DLQ) == len(POISON)
    duplicates = sum(completions.values()) - len(completions)
    with capsys.disabled():
        print(
            f"\nkilled workers: {TASKS} tasks, {kills} random SIGKILLs,"
            f" {poison_deaths} poison deaths,"
            f" {duplicates} duplicate completions ({duplicates / len(completions):.2%}),"
            f" {len(dead)} dead letters, all poison"
        )


def _finished(client: redis.Redis) -> bool:
    return (
        client.hlen(COMPLETIONS_KEY) == TASKS - len(POISON)
        and client.xlen(DLQ) == len(POISON)
        and int(client.xpending(QUEUE, GROUP)["pending"]) == 0
    )


def _progress(client: redis.Redis) -> str:
    return (
        f"{client.hlen(COMPLETIONS_KEY)} completed, {client.xlen(DLQ)} dead letters,"
        f" {client.xpending(QUEUE, GROUP)['pending']} pending"
    )
