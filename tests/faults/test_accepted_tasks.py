"""Nothing accepted is lost: a full backlog, hostile entries, long tasks and an emptied Redis,
each with real worker processes and the real API on a real redis-server."""

from __future__ import annotations

import base64
import subprocess
import time

import httpx
import pytest
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from service.tasks.task_format import task_fields
from tests.service.handlers import HANDLED_KEY
from tests.support.live_server import http, serve
from tests.support.processes import service_env, start_worker, stop
from tests.support.service_settings import make_settings

QUEUE, DLQ, GROUP = "shield:ingestion_queue", "shield:ingestion_queue:dlq", "lightrag-workers"
RECORD = "tests.service.handlers:record"
SLOW = "tests.service.handlers:slow_then_record"


def task_body(index: int, content: str = "x") -> dict[str, str]:
    return {"job_id": "job", "chunk_id": f"c{index}", "content": content}


def post_until_accepted(client: httpx.Client, index: int, deadline_s: float = 30) -> None:
    """What a well-behaved client does with a 503: wait Retry-After and try again."""
    deadline = time.monotonic() + deadline_s
    while True:
        reply = client.post("/tasks", json=task_body(index))
        if reply.status_code == 201:
            return
        assert reply.status_code == 503, reply.text
        assert time.monotonic() < deadline, "the backlog never drained"
        time.sleep(min(float(reply.headers["Retry-After"]), 0.05))


def test_a_full_backlog_refuses_and_every_accepted_task_is_handled(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list[subprocess.Popen[str]]
) -> None:
    settings = make_settings(redis_server, stream_maxlen=100)
    with serve(settings) as base_url, http(base_url) as client:
        replies = [client.post("/tasks", json=task_body(index)) for index in range(1000)]
    accepted = [f"c{i}" for i, reply in enumerate(replies) if reply.status_code == 201]
    refused = [reply for reply in replies if reply.status_code != 201]
    assert accepted == [f"c{index}" for index in range(100)]
    assert {reply.status_code for reply in refused} == {503}
    assert refused[0].headers["Retry-After"] == "2"
    assert "backlog is full" in refused[0].json()["detail"]
    assert redis_client.xlen(QUEUE) == 100
    env = service_env(redis_server.url, block_ms=200, stream_maxlen=100, task_handler=RECORD)
    workers.append(start_worker(env))
    wait_until(lambda: redis_client.llen(HANDLED_KEY) >= 100)
    assert sorted(redis_client.lrange(HANDLED_KEY, 0, -1)) == sorted(accepted)
    assert redis_client.xlen(DLQ) == 0


@pytest.mark.slow
def test_tasks_past_maxlen_with_a_live_worker_are_all_handled_once_accepted(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list[subprocess.Popen[str]]
) -> None:
    env = service_env(redis_server.url, block_ms=200, stream_maxlen=50, task_handler=RECORD)
    workers.append(start_worker(env))
    with serve(make_settings(redis_server, stream_maxlen=50)) as base_url, http(base_url) as client:
        for index in range(600):
            post_until_accepted(client, index)
    wait_until(lambda: redis_client.llen(HANDLED_KEY) >= 600, timeout_s=30)
    assert sorted(set(redis_client.lrange(HANDLED_KEY, 0, -1))) == sorted(
        f"c{index}" for index in range(600)
    )
    # Acked tasks are trimmed, a node of 100 entries at a time.
    assert redis_client.xlen(QUEUE) <= 50 + 100


def test_an_entry_that_is_not_utf8_is_dead_lettered_byte_for_byte(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list[subprocess.Popen[str]]
) -> None:
    raw = redis.Redis(port=redis_server.port)
    bad_id = raw.xadd(QUEUE, {"job_id": "x", "chunk_id": "c", "content": b"\xff\xfe"}).decode()
    for index in range(3):
        redis_client.xadd(QUEUE, task_fields(job_id="job", chunk_id=f"good{index}", content="x"))
    env = service_env(redis_server.url, block_ms=200, claim_idle_ms=400, task_handler=RECORD)
    workers.append(start_worker(env))
    wait_until(lambda: redis_client.llen(HANDLED_KEY) == 3 and raw.xlen(DLQ) == 1)
    [(_, letter)] = raw.xrange(DLQ)
    assert letter[b"content"] == b"\xff\xfe"
    assert letter[b"dlq_original_id"] == bad_id.encode()
    assert letter[b"dlq_reason"] == b"malformed: 1 field(s) are not UTF-8"
    assert workers[0].poll() is None
    with serve(make_settings(redis_server)) as base_url, http(base_url) as client:
        page = client.get("/tasks/dead-letters")
        assert page.status_code == 200
        [shown] = page.json()["dead_letters"]
        assert shown["fields"] == {"job_id": "x", "chunk_id": "c"}
        assert shown["binary_fields"] == [
            {"name_base64": base64.b64encode(b"content").decode(), "value_base64": "//4="}
        ]
        assert shown["reason"] == "malformed: 1 field(s) are not UTF-8"
    assert stop(workers[0]) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tasks", "seconds", "worker_count"),
    [(10, "0.6", 2), (1, "4", 3)],
    ids=["a-batch-longer-than-claim-idle", "one-task-longer-than-claim-idle"],
)
def test_busy_workers_keep_their_tasks(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: list[subprocess.Popen[str]],
    tasks: int,
    seconds: str,
    worker_count: int,
) -> None:
    env = service_env(redis_server.url, block_ms=200, claim_idle_ms=1000, task_handler=SLOW)
    for index in range(tasks):
        redis_client.xadd(QUEUE, task_fields(job_id="job", chunk_id=f"c{index}", content=seconds))
    workers.extend(start_worker(env, consumer=f"w{index}") for index in range(worker_count))
    wait_until(lambda: redis_client.llen(HANDLED_KEY) >= tasks, timeout_s=30)
    wait_until(lambda: int(redis_client.xpending(QUEUE, GROUP)["pending"]) == 0)
    # Long enough for any wrongly reclaimed copy to have run too.
    time.sleep(float(seconds) + 1.5)
    assert redis_client.llen(HANDLED_KEY) == tasks
    assert redis_client.xlen(DLQ) == 0


def test_workers_recreate_their_group_after_redis_loses_its_data(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list[subprocess.Popen[str]]
) -> None:
    # One at a time, so the order handled is the order posted.
    env = service_env(redis_server.url, block_ms=200, task_handler=RECORD, worker_concurrency=1)
    workers.append(start_worker(env))
    with serve(make_settings(redis_server)) as base_url, http(base_url) as client:
        assert client.post("/tasks", json=task_body(0)).status_code == 201
        wait_until(lambda: redis_client.llen(HANDLED_KEY) == 1)
        redis_client.flushall()
        for index in range(1, 6):
            assert client.post("/tasks", json=task_body(index)).status_code == 201
        wait_until(lambda: redis_client.llen(HANDLED_KEY) == 5)
        health = client.get("/health/detailed").json()
    assert redis_client.lrange(HANDLED_KEY, 0, -1) == [f"c{index}" for index in range(1, 6)]
    assert GROUP in [group["name"] for group in redis_client.xinfo_groups(QUEUE)]
    assert health["status"] == "up"
    assert workers[0].poll() is None


def test_dead_letter_ids_that_cannot_be_paged_from_are_refused_with_400(
    api: str, redis_client: redis.Redis
) -> None:
    with http(api) as client:
        for after in ("$", "abc", "1-2-3", "18446744073709551616-0"):
            reply = client.get("/tasks/dead-letters", params={"after": after})
            assert reply.status_code == 400, (after, reply.text)
        last = client.get("/tasks/dead-letters", params={"after": f"{2**64 - 1}-{2**64 - 1}"})
        assert last.status_code == 200 and last.json()["dead_letters"] == []
        assert client.post("/tasks/dead-letters/$/requeue").status_code == 400
