"""The shared rate limit holds while a worker is SIGKILLed: every task that got a 201 runs,
and the handler never sees more than the cap plus one second's worth in any second."""

from __future__ import annotations

import signal

import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tests.faults.rate_handlers import CALL_TIMES_KEY, RATE_COMPLETIONS_KEY
from tests.support.job_submission import post_tasks
from tests.support.live_server import serve
from tests.support.processes import WorkerProcesses, service_env, stop
from tests.support.service_settings import make_settings

QUEUE, GROUP, DLQ = "shield:ingestion_queue", "lightrag-workers", "shield:ingestion_queue:dlq"
TASKS = 200
RATE_PER_S = 20


def most_calls_in_one_second(call_times: list[float]) -> int:
    """The most calls that fall within any window of one second."""
    most, first = 0, 0
    for last, at in enumerate(call_times):
        while at - call_times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_the_rate_limit_holds_tasks_back_while_a_worker_is_killed_and_loses_none(
    redis_server: RedisServer, redis_client: redis.Redis, workers: WorkerProcesses
) -> None:
    with serve(make_settings(redis_server)) as base_url:
        post_tasks(base_url, "rated", TASKS)
    env = service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=1000,
        task_handler="tests.faults.rate_handlers:note_call_time_then_count",
        worker_concurrency=8,
        handler_rate_per_s=RATE_PER_S,
    )
    for consumer in ("rate-a", "rate-b"):
        workers.start(env, consumer)
    # Killed a few seconds in, holding tasks it read: some running, some waiting for a
    # token. Its replacement and the other worker reclaim them.
    wait_until(lambda: redis_client.hlen(RATE_COMPLETIONS_KEY) >= 60, timeout_s=30)
    stop(workers[0], signal.SIGKILL)
    killed_holding = len(
        redis_client.xpending_range(QUEUE, GROUP, "-", "+", TASKS, consumername="rate-a")
    )
    workers.start(env, "rate-c")
    wait_until(
        lambda: redis_client.hlen(RATE_COMPLETIONS_KEY) == TASKS,
        timeout_s=60,
        describe=lambda: f"{redis_client.hlen(RATE_COMPLETIONS_KEY)} of {TASKS} done",
    )
    wait_until(lambda: redis_client.xpending(QUEUE, GROUP)["pending"] == 0, timeout_s=30)

    completions = {
        chunk: int(count) for chunk, count in redis_client.hgetall(RATE_COMPLETIONS_KEY).items()
    }
    assert set(completions) == {f"c{i}" for i in range(TASKS)}
    assert redis_client.xlen(DLQ) == 0
    assert killed_holding > 0
    call_times = sorted(float(at) for at in redis_client.lrange(CALL_TIMES_KEY, 0, -1))
    assert len(call_times) >= TASKS
    # The bucket holds one second's worth and refills at the rate: any second sees at most
    # that plus the second's refill, killed worker or not.
    most = most_calls_in_one_second(call_times)
    assert most <= 2 * RATE_PER_S, most
    # And it held tasks back: 200 calls at 20/s take at least 9 s after the first 20.
    span_s = call_times[-1] - call_times[0]
    assert span_s >= (len(call_times) - RATE_PER_S) / RATE_PER_S - 0.2, span_s
    print(
        f"\nrate limit under a SIGKILL: {len(call_times)} calls for {TASKS} tasks in"
        f" {span_s:.1f} s, at most {most} in any second (cap {RATE_PER_S}/s),"
        f" {killed_holding} held by the worker killed"
    )
