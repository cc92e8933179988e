"""The worker process against a real redis-server: acks, reclaim, retries, dead letters."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from service.tasks.task_format import task_fields
from tests.service.handlers import BEGAN_KEY, HANDLED_KEY, HOLD_MARK, RELEASE_KEY
from tests.support.live_server import http, serve
from tests.support.processes import REPO_ROOT, service_env, start_worker, stop
from tests.support.service_settings import make_settings
from tests.support.task_events import chunks_in_events, events_of_type, pending_count

QUEUE = "shield:ingestion_queue"
DLQ = "shield:ingestion_queue:dlq"
GROUP = "lightrag-workers"


@pytest.fixture
def worker_env(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, str]:
    return service_env(redis_server.url, block_ms=200, claim_idle_ms=400)


def enqueue(client: redis.Redis, chunk_id: str, content: str = "x", job_id: str = "job") -> str:
    entry_id: str = client.xadd(
        QUEUE, task_fields(job_id=job_id, chunk_id=chunk_id, content=content)
    )
    return entry_id


@pytest.mark.parametrize("handler", ["record", "record_async"])
def test_worker_runs_sync_and_async_handlers_and_acks(
    handler: str, worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    worker_env["SHIELD_TASK_HANDLER"] = f"tests.service.handlers:{handler}"
    # One at a time, so the order of the handler's calls is the stream's.
    worker_env["SHIELD_WORKER_CONCURRENCY"] = "1"
    workers.append(start_worker(worker_env, consumer="w1"))
    chunks = [f"c{index}" for index in range(25)]
    for chunk in chunks:
        enqueue(redis_client, chunk)
    wait_until(lambda: redis_client.llen(HANDLED_KEY) == 25)
    assert redis_client.lrange(HANDLED_KEY, 0, -1) == chunks
    wait_until(lambda: pending_count(redis_client) == 0)
    wait_until(lambda: chunks_in_events(redis_client, "ingestion.completed") == chunks)
    assert {fields["job_id"] for fields in events_of_type(redis_client, "ingestion.started")} == {
        "job"
    }
    assert len(events_of_type(redis_client, "worker.started")) == 1
    assert redis_client.hget("shield:ingestion_queue:counters", "acked") == "25"
    assert stop(workers[0]) == 0
    assert len(events_of_type(redis_client, "worker.stopped")) == 1


def test_killed_workers_task_is_reclaimed(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    slow = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:slow_then_record")
    workers.append(start_worker(slow, consumer="doomed"))
    entry_id = enqueue(redis_client, "survivor", content="60")
    wait_until(lambda: events_of_type(redis_client, "ingestion.started"))
    stop(workers[0], signal.SIGKILL)
    assert redis_client.llen(HANDLED_KEY) == 0
    [pending] = redis_client.xpending_range(QUEUE, GROUP, "-", "+", 10)
    assert pending["message_id"] == entry_id and pending["consumer"] == "doomed"
    fast = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:record")
    workers.append(start_worker(fast, consumer="rescuer"))
    wait_until(lambda: redis_client.lrange(HANDLED_KEY, 0, -1) == ["survivor"])
    wait_until(lambda: pending_count(redis_client) == 0)


def test_a_batch_that_a_redis_error_cuts_short_is_reclaimed_not_held_forever(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    handler = "tests.service.handlers:refuse_writes_then_fail"
    refusing = dict(worker_env, SHIELD_TASK_HANDLER=handler)
    workers.append(start_worker(refusing))
    try:
        enqueue(redis_client, "cut-short")
        # The failed task's retry move is refused: the batch ends in a RedisError.
        wait_until(lambda: "errorstat_NOREPLICAS" in redis_client.info("errorstats"))
        time.sleep(0.5)
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    # Renewing the cut-short batch's lease would keep it from reclaim for lease_max_ms (1 h).
    wait_until(lambda: redis_client.lrange(HANDLED_KEY, 0, -1) == ["cut-short"])
    wait_until(lambda: pending_count(redis_client) == 0)


def test_every_batch_is_acked_when_quick_and_slow_batches_alternate(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    # Quick batches read the next one ahead and slow ones do not: the batch that runs
    # between must still be acked, its lease let go.
    slow = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:slow_then_record")
    chunks = [f"c{index}" for index in range(40)]
    for index, chunk in enumerate(chunks):
        enqueue(redis_client, chunk, content="0.02" if 10 <= index < 20 else "0")
    workers.append(start_worker(slow))
    wait_until(lambda: sorted(redis_client.lrange(HANDLED_KEY, 0, -1)) == sorted(chunks))
    wait_until(lambda: pending_count(redis_client) == 0)


def chunks_handled(client: redis.Redis) -> set[str]:
    return set(client.lrange(HANDLED_KEY, 0, -1))


def test_a_dead_workers_tasks_are_reclaimed_behind_ones_a_live_worker_holds(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    # Ten at once: the busy worker holds all ten tasks, and the rescuer reads none of them.
    holding = dict(
        worker_env,
        SHIELD_TASK_HANDLER="tests.service.handlers:hold_marked",
        SHIELD_WORKER_CONCURRENCY="10",
    )
    for index in range(10):
        enqueue(redis_client, f"held-{index}", content=f"{HOLD_MARK} {index}")
    workers.append(start_worker(holding, consumer="busy"))
    try:
        wait_until(lambda: "held-0" in chunks_in_events(redis_client, "ingestion.started"))
        orphans = [enqueue(redis_client, f"orphan-{index}") for index in range(5)]
        # Delivered to a consumer that dies at once: pending behind the ten held ones.
        redis_client.xreadgroup(GROUP, "dead", {QUEUE: ">"}, count=5)
        assert [
            row["consumer"] for row in redis_client.xpending_range(QUEUE, GROUP, orphans[0], "+", 5)
        ] == ["dead"] * 5
        fast = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:record")
        workers.append(start_worker(fast, consumer="rescuer"))
        wait_until(
            lambda: {f"orphan-{index}" for index in range(5)} <= chunks_handled(redis_client)
        )
        assert not any(chunk.startswith("held-") for chunk in chunks_handled(redis_client))
    finally:
        redis_client.set(RELEASE_KEY, "1")
    wait_until(lambda: pending_count(redis_client) == 0, timeout_s=30)


def test_a_batch_read_ahead_is_not_held_while_the_one_before_it_hangs(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    holding = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:hold_marked")
    for index in range(10):
        enqueue(redis_client, f"quick-{index}")
    enqueue(redis_client, "hangs", content=HOLD_MARK)
    for index in range(9):
        enqueue(redis_client, f"behind-{index}")
    for index in range(10):
        enqueue(redis_client, f"ahead-{index}")
    workers.append(start_worker(holding, consumer="busy"))
    try:
        # The quick batch reads the hanging one ahead, which reads the next one ahead.
        wait_until(lambda: "hangs" in chunks_in_events(redis_client, "ingestion.started"))
        fast = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:record")
        workers.append(start_worker(fast, consumer="rescuer"))
        ahead = {f"ahead-{index}" for index in range(10)}
        wait_until(lambda: ahead <= chunks_handled(redis_client))
        assert "hangs" not in chunks_handled(redis_client)
    finally:
        redis_client.set(RELEASE_KEY, "1")
    wait_until(lambda: pending_count(redis_client) == 0, timeout_s=30)
    # The busy worker checks what it read ahead before running it: none runs twice.
    handled = redis_client.lrange(HANDLED_KEY, 0, -1)
    assert sorted(handled) == sorted(set(handled)) and len(handled) == 30


def test_three_failures_dead_letter_then_requeue(
    worker_env: dict[str, str], redis_client: redis.Redis, redis_server: RedisServer, workers: list
) -> None:
    failing = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:fail_always")
    workers.append(start_worker(failing))
    original_id = enqueue(redis_client, "doomed-chunk", job_id="job-dlq")
    wait_until(lambda: redis_client.xlen(DLQ) == 1)
    wait_until(lambda: pending_count(redis_client) == 0)
    stop(workers[0])
    [(_, letter)] = redis_client.xrange(DLQ)
    assert letter["dlq_reason"] == "RuntimeError: cannot process doomed-chunk"
    assert letter["dlq_attempts"] == "3"
    assert letter["chunk_id"] == "doomed-chunk" and letter["retry_count"] == "2"
    failed = events_of_type(redis_client, "ingestion.failed")
    assert [json.loads(fields["data"])["attempt"] for fields in failed] == [1, 2, 3]
    [dead] = events_of_type(redis_client, "ingestion.dead_lettered")
    assert dead["job_id"] == "job-dlq"
    assert redis_client.hget("shield:ingestion_queue:counters", "retried") == "2"
    # Each attempt is its own entry, every one of them acked (pending is 0 above).
    attempts = redis_client.xrange(QUEUE)
    assert attempts[0][0] == original_id
    assert [fields["retry_count"] for _, fields in attempts] == ["0", "1", "2"]

    with serve(make_settings(redis_server)) as base_url, http(base_url) as client:
        listing = client.get("/tasks/dead-letters").json()
        assert listing["total"] == 1
        [shown] = listing["dead_letters"]
        assert shown["reason"] == "RuntimeError: cannot process doomed-chunk"
        assert shown["attempts"] == 3
        assert shown["fields"]["chunk_id"] == "doomed-chunk"
        requeued = client.post(f"/tasks/dead-letters/{shown['id']}/requeue")
        assert requeued.status_code == 201
        assert client.post(f"/tasks/dead-letters/{shown['id']}/requeue").status_code == 404
    assert redis_client.xlen(DLQ) == 0
    [(_, fields)] = redis_client.xrange(QUEUE, requeued.json()["id"], requeued.json()["id"])
    assert fields["retry_count"] == "0" and not any(name.startswith("dlq_") for name in fields)
    healthy = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:record")
    workers.append(start_worker(healthy))
    wait_until(lambda: redis_client.lrange(HANDLED_KEY, 0, -1) == ["doomed-chunk"])


def test_poison_task_that_kills_the_worker_ends_in_dead_letters(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    env = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:kill_on_poison")
    enqueue(redis_client, "poison-chunk", content="poison")
    enqueue(redis_client, "good-chunk", content="fine")
    crashes = 0
    while redis_client.xlen(DLQ) == 0:
        assert crashes <= 4, "poison task was not dead-lettered"
        worker = start_worker(env)
        workers.append(worker)
        try:
            worker.wait(timeout=10)
            assert worker.returncode == -signal.SIGKILL
            crashes += 1
        except subprocess.TimeoutExpired:
            break
    wait_until(lambda: redis_client.xlen(DLQ) == 1)
    [(_, letter)] = redis_client.xrange(DLQ)
    assert letter["chunk_id"] == "poison-chunk"
    assert letter["dlq_reason"] == "poison: delivered 4 times without an ack"
    assert letter["dlq_attempts"] == "3"
    assert crashes == 3
    wait_until(lambda: "good-chunk" in redis_client.lrange(HANDLED_KEY, 0, -1))
    wait_until(lambda: pending_count(redis_client) == 0)


def test_malformed_entries_go_to_dead_letters_without_crashing(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    redis_client.xadd(QUEUE, {"chunk_id": "c", "content": "x"})
    redis_client.xadd(QUEUE, {"job_id": "j", "chunk_id": "c2", "content": "x", "metadata": "{oops"})
    enqueue(redis_client, "after-the-bad-ones")
    env = dict(worker_env, SHIELD_TASK_HANDLER="tests.service.handlers:record")
    workers.append(start_worker(env))
    wait_until(lambda: redis_client.lrange(HANDLED_KEY, 0, -1) == ["after-the-bad-ones"])
    reasons = [fields["dlq_reason"] for _, fields in redis_client.xrange(DLQ)]
    assert reasons[0] == "malformed: missing field(s): job_id"
    assert reasons[1].startswith("malformed: metadata is not valid JSON")
    assert workers[0].poll() is None
    wait_until(lambda: pending_count(redis_client) == 0)
    [started] = events_of_type(redis_client, "worker.started")
    assert json.loads(started["data"])["consumer"] == f"{socket.gethostname()}-{workers[0].pid}"


def test_sigterm_finishes_the_running_tasks_and_leaves_the_rest_pending(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    # Two slots: two tasks run, the third is read only after one of them is done.
    env = dict(
        worker_env,
        SHIELD_TASK_HANDLER="tests.service.handlers:slow_then_record",
        SHIELD_WORKER_CONCURRENCY="2",
    )
    for index in range(3):
        enqueue(redis_client, f"slow{index}", content="1.0")
    workers.append(start_worker(env, consumer="leaving"))
    wait_until(lambda: len(chunks_in_events(redis_client, "ingestion.started")) == 2)
    # Both handlers have begun: a task announced but not yet begun at the stop is left.
    wait_until(lambda: redis_client.llen(BEGAN_KEY) == 2)
    assert stop(workers[0], signal.SIGTERM) == 0
    assert sorted(redis_client.lrange(HANDLED_KEY, 0, -1)) == ["slow0", "slow1"]
    assert pending_count(redis_client) == 0
    assert len(events_of_type(redis_client, "worker.stopped")) == 1
    workers.append(start_worker(env, consumer="successor"))
    wait_until(lambda: redis_client.llen(HANDLED_KEY) == 3)


def test_a_task_read_but_not_started_at_sigterm_stays_pending_for_another_worker(
    worker_env: dict[str, str], redis_client: redis.Redis, workers: list
) -> None:
    # A rate of one call per 10 s: the first task runs, the second is read and waits for a
    # token when the stop comes, so it is left pending, never started. The stop waits until
    # the first handler has begun: both tasks are announced before either takes a token.
    env = dict(
        worker_env,
        SHIELD_TASK_HANDLER="tests.service.handlers:slow_then_record",
        SHIELD_HANDLER_RATE_PER_S="0.1",
    )
    for index in range(2):
        enqueue(redis_client, f"slow{index}", content="0.5")
    workers.append(start_worker(env, consumer="leaving"))
    wait_until(lambda: len(chunks_in_events(redis_client, "ingestion.started")) == 2)
    wait_until(lambda: redis_client.llen(BEGAN_KEY) == 1)
    assert stop(workers[0], signal.SIGTERM) == 0
    [handled] = redis_client.lrange(HANDLED_KEY, 0, -1)
    [pending] = redis_client.xpending_range(QUEUE, GROUP, "-", "+", 10)
    assert pending["consumer"] == "leaving"
    [(_, waiting)] = redis_client.xrange(QUEUE, pending["message_id"], pending["message_id"])
    assert {handled, waiting["chunk_id"]} == {"slow0", "slow1"}


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("BATCH_SIZE", "ten", "SHIELD_BATCH_SIZE"),
        ("BLOCK_MS", "-5", "SHIELD_BLOCK_MS"),
        ("REDIS_URL", "http://127.0.0.1", "SHIELD_REDIS_URL"),
        ("TASK_HANDLER", "no_colon", "SHIELD_TASK_HANDLER"),
        ("TASK_HANDLER", "", "SHIELD_TASK_HANDLER"),
        ("TASK_HANDLER", "http:ftp://x", "SHIELD_TASK_HANDLER"),
        ("TASK_HANDLER", "missing.module:run", "SHIELD_TASK_HANDLER"),
    ],
)
def test_bad_setting_stops_the_worker_with_one_line(
    worker_env: dict[str, str], setting: str, value: str, named: str
) -> None:
    result = _start_with(["-m", "service.worker"], dict(worker_env, **{f"SHIELD_{setting}": value}))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_bad_setting_stops_the_api_with_one_line(worker_env: dict[str, str]) -> None:
    result = _start_with(
        ["-c", "import service.main"], dict(worker_env, SHIELD_MAX_EVENT_BYTES="0")
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "config error: SHIELD_MAX_EVENT_BYTES: Input should be greater than 0"
    ]


def _start_with(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Start a service process the way systemd would and wait for it to exit."""
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_worker_with_no_handler_refuses_at_once_and_reads_nothing(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    enqueue(redis_client, "nobody-does-this")
    redis_client.config_resetstat()
    result = _start_with(["-m", "service.worker"], worker_env)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "SHIELD_TASK_HANDLER" in line
    for form in ("http:<url>", "lightrag:<base-url>", "python:<module>:<callable>"):
        assert form in line
    commands = redis_client.info("commandstats")
    assert not any(name in commands for name in ("cmdstat_xreadgroup", "cmdstat_xack"))
    assert all(group["consumers"] == 0 for group in redis_client.xinfo_groups(QUEUE))
    assert redis_client.xlen(QUEUE) == 1
