"""The job API against a real redis-server, the real app and real worker processes:
POST /jobs all or nothing, job state and its counters, job.completed once, cancellation."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from service.core import names
from service.core.settings import Settings
from tests.service.job_handlers import BEGAN_KEY, FAIL_MARK, HANDLED_KEY, HOLD_MARK
from tests.support.http_standin import HttpStandin, Reply
from tests.support.live_server import http, serve
from tests.support.processes import service_env, start_worker
from tests.support.service_settings import make_settings
from tests.support.tokens import ADMIN_TOKEN, JWT_SECRET, mint

HANDLERS = "tests.service.job_handlers"


def job_body(job_id: str | None, contents: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source_uri": "s3://docs/a.pdf",
        "chunks": [{"chunk_id": f"c{i}", "content": text} for i, text in enumerate(contents)],
    }
    if job_id is not None:
        body["job_id"] = job_id
    return body


def job_events(client: redis.Redis, event_type: str, job_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(fields["data"])
        for _, fields in client.xrange(names.EVENTS_STREAM)
        if fields["type"] == event_type and fields["job_id"] == job_id
    ]


def job(base_url: str, job_id: str) -> dict[str, Any]:
    with http(base_url) as client:
        reply = client.get(f"/jobs/{job_id}")
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def settled(answer: dict[str, Any]) -> int:
    return int(answer["done"] + answer["failed"] + answer["cancelled"])


def start(
    workers: list[subprocess.Popen[str]], redis_server: RedisServer, handler: str, **settings: Any
) -> None:
    env = service_env(
        redis_server.url, block_ms=200, claim_idle_ms=400, task_handler=f"{HANDLERS}:{handler}"
    )
    # A handler spec of its own (http:<url>) replaces the module's handler.
    env.update({f"SHIELD_{name.upper()}": str(value) for name, value in settings.items()})
    workers.append(start_worker(env))


def test_a_job_runs_to_done_and_says_so_once(
    api: str,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    workers: list[subprocess.Popen[str]],
) -> None:
    with http(api) as client:
        reply = client.post("/jobs", json=job_body("doc-1", [f"text {i}" for i in range(30)]))
    assert reply.status_code == 201, reply.text
    created = reply.json()
    assert created["job_id"] == "doc-1" and len(created["ids"]) == 30
    # Every one of the job's events comes after the cursor.
    after = redis_client.xrange(names.EVENTS_STREAM, f"({created['cursor']}", "+")
    queued = [f for _, f in after if f["type"] == "ingestion.queued" and f["job_id"] == "doc-1"]
    assert len(queued) == 30
    assert job(api, "doc-1")["state"] == "queued"
    start(workers, redis_server, "record_or_fail")
    start(workers, redis_server, "record_or_fail")
    wait_until(lambda: job(api, "doc-1")["state"] == "done", timeout_s=30)
    answer = job(api, "doc-1")
    assert (answer["total"], answer["done"], answer["failed"], answer["cancelled"]) == (
        30,
        30,
        0,
        0,
    )
    assert answer["queued"] == answer["running"] == answer["retrying"] == 0
    assert answer["total_known"] is True and answer["finished_at"]
    assert [chunk["chunk_id"] for chunk in answer["chunks"]] == [f"c{i}" for i in range(30)]
    assert {(chunk["state"], chunk["attempts"]) for chunk in answer["chunks"]} == {("done", 1)}
    assert [chunk["entry_id"] for chunk in answer["chunks"]] == created["ids"]
    completed = job_events(redis_client, "job.completed", "doc-1")
    assert completed == [{"total": 30, "done": 30, "failed": 0, "cancelled": 0}]
    # Finished jobs are kept for SHIELD_JOB_TTL_S, whatever the events stream keeps.
    ttl_s = redis_client.ttl(f"{names.job_key_prefix(names.INGESTION_STREAM)}job:doc-1")
    assert 0 < ttl_s <= 7 * 24 * 3600


def test_a_job_with_a_dead_letter_fails_and_a_requeue_reopens_it(
    api: str,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    workers: list[subprocess.Popen[str]],
) -> None:
    with http(api) as client:
        assert (
            client.post("/jobs", json=job_body("doc-2", ["a", FAIL_MARK, "c"])).status_code == 201
        )
    start(workers, redis_server, "record_or_fail")
    wait_until(lambda: job(api, "doc-2")["state"] == "failed", timeout_s=30)
    answer = job(api, "doc-2")
    assert (answer["done"], answer["failed"], answer["total"]) == (2, 1, 3)
    failed = answer["chunks"][1]
    assert failed["state"] == "failed" and failed["attempts"] == 3
    assert "fails on purpose" in failed["error"]
    assert job_events(redis_client, "job.completed", "doc-2") == [
        {"total": 3, "done": 2, "failed": 1, "cancelled": 0}
    ]
    with http(api) as client:
        letter = client.get("/tasks/dead-letters").json()["dead_letters"][0]
        assert client.post(f"/tasks/dead-letters/{letter['id']}/requeue").status_code == 201
    # Open again, and failed again: counted once more, never past the total.
    reopened = job(api, "doc-2")
    assert reopened["state"] in ("running", "failed") and settled(reopened) <= 3
    wait_until(lambda: len(job_events(redis_client, "job.completed", "doc-2")) == 2, timeout_s=30)
    final = job(api, "doc-2")
    assert (final["state"], final["done"], final["failed"]) == ("failed", 2, 1)


@pytest.fixture
def small_backlog_api(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[str]:
    with serve(make_settings(redis_server, stream_maxlen=10, max_job_chunks=12)) as base_url:
        yield base_url


def test_a_job_that_does_not_fit_is_refused_whole(
    small_backlog_api: str, redis_client: redis.Redis
) -> None:
    with http(small_backlog_api) as client:
        assert client.post("/tasks", json={"job_id": "t", "chunk_id": "x", "content": "x"})
        refused = client.post("/jobs", json=job_body("big", ["x"] * 10))
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert redis_client.xlen(names.INGESTION_STREAM) == 1
        assert client.get("/jobs/big").status_code == 404
        too_many = client.post("/jobs", json=job_body("huge", ["x"] * 13))
        assert too_many.status_code == 413, too_many.text
        assert client.post("/jobs", json=job_body("fits", ["x"] * 9)).status_code == 201
    assert redis_client.xlen(names.INGESTION_STREAM) == 10


def test_job_input_rules(api: str) -> None:
    with http(api) as client:
        assert client.post("/jobs", json=job_body("j", ["a"])).status_code == 201
        again = client.post("/jobs", json=job_body("j", ["a"]))
        assert again.status_code == 409 and "exists" in again.json()["detail"]
        into_whole = client.post("/tasks", json={"job_id": "j", "chunk_id": "z", "content": "z"})
        assert into_whole.status_code == 409
        twice = {"job_id": "k", "chunks": [{"chunk_id": "a", "content": "x"}] * 2}
        assert client.post("/jobs", json=twice).status_code == 422
        assert client.post("/jobs", json={"job_id": "k", "chunks": []}).status_code == 422
        assert client.get("/jobs/nope").status_code == 404
        assert client.get("/jobs/bad%0Aid").status_code == 400
        assert client.get("/jobs/" + "x" * 257).status_code == 400
        assert client.delete("/jobs/nope").status_code == 404
        generated = client.post("/jobs", json=job_body(None, ["a"])).json()["job_id"]
        assert client.get(f"/jobs/{generated}").status_code == 200


def test_tasks_posted_one_by_one_are_counted_without_a_total(
    api: str, redis_server: RedisServer, workers: list[subprocess.Popen[str]]
) -> None:
    with http(api) as client:
        for index in range(3):
            body = {"job_id": "loose", "chunk_id": f"c{index}", "content": "x"}
            assert client.post("/tasks", json=body).status_code == 201
    answer = job(api, "loose")
    assert (answer["total"], answer["queued"], answer["total_known"]) == (3, 3, False)
    start(workers, redis_server, "record_or_fail")
    wait_until(lambda: job(api, "loose")["done"] == 3, timeout_s=30)
    # No known total, so never finished by itself.
    assert job(api, "loose")["state"] == "running"


def test_jobs_are_listed_newest_first_in_pages(api: str) -> None:
    with http(api) as client:
        for index in range(7):
            assert client.post("/jobs", json=job_body(f"p{index}", ["a"])).status_code == 201
        client.delete("/jobs/p3")
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = client.get("/jobs", params=params).json()
            seen += [item["job_id"] for item in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == [f"p{index}" for index in reversed(range(7))]
        cancelled = client.get("/jobs", params={"state": "cancelled"}).json()["jobs"]
        assert [item["job_id"] for item in cancelled] == ["p3"]
        assert client.get("/jobs", params={"state": "sleeping"}).status_code == 422


@pytest.mark.parametrize("handler", ["hold_until_cancelled", "poll_until_cancelled"])
def test_cancelling_stops_the_running_chunk_and_runs_no_other(
    handler: str,
    api: str,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    workers: list[subprocess.Popen[str]],
) -> None:
    contents = [HOLD_MARK] + ["x"] * 9
    with http(api) as client:
        assert client.post("/jobs", json=job_body("stop-me", contents)).status_code == 201
        start(workers, redis_server, handler, worker_concurrency=1, batch_size=1)
        wait_until(lambda: redis_client.llen(BEGAN_KEY) == 1, timeout_s=20)
        reply = client.delete("/jobs/stop-me")
        assert reply.status_code == 202, reply.text
        assert reply.json() == {"job_id": "stop-me", "state": "cancelling"}
        wait_until(lambda: job(api, "stop-me")["state"] == "cancelled", timeout_s=20)
        again = client.delete("/jobs/stop-me")
        assert (again.status_code, again.json()["state"]) == (202, "cancelled")
    answer = job(api, "stop-me")
    assert (answer["cancelled"], answer["done"], answer["total"]) == (10, 0, 10)
    assert redis_client.lrange(BEGAN_KEY, 0, -1) == ["stop-me/c0"]
    assert redis_client.llen(HANDLED_KEY) == 0
    assert job_events(redis_client, "job.cancelled", "stop-me") == [
        {"total": 10, "done": 0, "failed": 0, "cancelled": 10}
    ]
    assert job_events(redis_client, "job.completed", "stop-me") == []
    assert int(redis_client.xpending(names.INGESTION_STREAM, names.WORKER_GROUP)["pending"]) == 0


def test_a_queued_job_cancels_at_once_and_a_finished_one_refuses(
    api: str,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    workers: list[subprocess.Popen[str]],
) -> None:
    with http(api) as client:
        client.post("/jobs", json=job_body("idle", ["x"] * 5))
        reply = client.delete("/jobs/idle")
        # No worker ever took any of it: taken back from the stream in the same call.
        assert (reply.status_code, reply.json()["state"]) == (202, "cancelled")
        assert redis_client.xlen(names.INGESTION_STREAM) == 0
        post = client.post("/tasks", json={"job_id": "idle", "chunk_id": "late", "content": "x"})
        assert post.status_code == 409
        client.post("/jobs", json=job_body("quick", ["x"]))
        start(workers, redis_server, "record_or_fail")
        wait_until(lambda: job(api, "quick")["state"] == "done", timeout_s=20)
        assert client.delete("/jobs/quick").status_code == 409


def test_idempotent_writes_replay_the_first_answer(api: str, redis_client: redis.Redis) -> None:
    task = {"job_id": "idem", "chunk_id": "c", "content": "x"}
    key = {"Idempotency-Key": "order-42"}
    with http(api) as client:
        first = client.post("/tasks", json=task, headers=key)
        second = client.post("/tasks", json=task, headers=key)
        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert redis_client.xlen(names.INGESTION_STREAM) == 1
        other = client.post("/tasks", json={**task, "content": "y"}, headers=key)
        assert other.status_code == 422
        for bad in (b"", b"x" * 201, "caf\u00e9".encode("latin-1"), b"a\tb"):
            reply = client.post("/tasks", json=task, headers={b"Idempotency-Key": bad})
            assert reply.status_code == 400, bad
        body = job_body(None, ["a", "b"])
        made = client.post("/jobs", json=body, headers={"Idempotency-Key": "doc"})
        again = client.post("/jobs", json=body, headers={"Idempotency-Key": "doc"})
        assert made.status_code == again.status_code == 201
        assert again.json() == made.json() and again.headers["Idempotent-Replayed"] == "true"
        assert redis_client.xlen(names.INGESTION_STREAM) == 3
        event = {"type": "app.note", "job_id": "idem", "data": {"n": 1}}
        before = redis_client.xlen(names.EVENTS_STREAM)
        one = client.post("/events", json=event, headers={"Idempotency-Key": "e1"})
        two = client.post("/events", json=event, headers={"Idempotency-Key": "e1"})
        assert one.status_code == two.status_code == 201 and one.json() == two.json()
        assert redis_client.xlen(names.EVENTS_STREAM) == before + 1


def test_a_limited_token_sees_and_cancels_only_its_jobs(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings: Settings = make_settings(redis_server, api_token=ADMIN_TOKEN, jwt_secret=JWT_SECRET)
    with serve(settings) as base_url:
        with http(base_url, token=ADMIN_TOKEN) as admin:
            for job_id in ("mine-1", "theirs-1", "mine-2"):
                assert admin.post("/jobs", json=job_body(job_id, ["a"])).status_code == 201
        token = mint("jobs:read jobs:write jobs:cancel", jobs=["mine-*"])
        with http(base_url, token=token) as limited:
            listed = [item["job_id"] for item in limited.get("/jobs").json()["jobs"]]
            assert listed == ["mine-2", "mine-1"]
            assert limited.get("/jobs/mine-1").status_code == 200
            for method, path in (("GET", "/jobs/theirs-1"), ("DELETE", "/jobs/theirs-1")):
                assert limited.request(method, path).status_code == 403
            assert limited.get("/jobs/theirs-unknown").status_code == 403
            refused = limited.post("/jobs", json=job_body("theirs-2", ["a"]))
            assert refused.status_code == 403
            assert limited.delete("/jobs/mine-1").status_code == 202
        reader = mint("jobs:read")
        with http(base_url, token=reader) as read_only:
            assert read_only.delete("/jobs/mine-2").status_code == 403


def test_an_http_handler_stops_waiting_when_its_job_is_cancelled(
    api: str, redis_server: RedisServer, workers: list[subprocess.Popen[str]]
) -> None:
    with HttpStandin(Reply(delay_s=8.0)) as service, http(api) as client:
        start(workers, redis_server, "unused", task_handler=f"http:{service.url}")
        assert client.post("/jobs", json=job_body("slow-http", ["x"])).status_code == 201
        wait_until(lambda: len(service.received) == 1, timeout_s=20)
        cancelled_at = time.monotonic()
        assert client.delete("/jobs/slow-http").status_code == 202
        wait_until(lambda: job(api, "slow-http")["state"] == "cancelled", timeout_s=20)
        # Well before the service's answer: the worker stopped waiting for it.
        assert time.monotonic() - cancelled_at < 5
    answer = job(api, "slow-http")
    assert answer["chunks"][0]["state"] == "cancelled"
    assert "cancelled" in answer["chunks"][0]["error"]


def test_jobs_whose_last_chunks_settle_together_complete_once(
    api: str,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    workers: list[subprocess.Popen[str]],
) -> None:
    job_ids = [f"pair-{index}" for index in range(40)]
    with http(api) as client:
        for job_id in job_ids:
            assert client.post("/jobs", json=job_body(job_id, ["a", "b"])).status_code == 201
    # Two workers, one chunk at a time each: a job's two chunks usually run side by side.
    for _ in range(2):
        start(workers, redis_server, "record_or_fail", worker_concurrency=1, batch_size=1)
    wait_until(lambda: all(job(api, j)["state"] == "done" for j in job_ids), timeout_s=60)
    for job_id in job_ids:
        assert job_events(redis_client, "job.completed", job_id) == [
            {"total": 2, "done": 2, "failed": 0, "cancelled": 0}
        ]


def test_a_job_of_the_largest_size_is_taken_whole(api: str, redis_client: redis.Redis) -> None:
    chunks = [{"chunk_id": f"c{index}", "content": "x" * 100} for index in range(10_000)]
    with http(api) as client:
        reply = client.post("/jobs", json={"job_id": "largest", "chunks": chunks})
        assert reply.status_code == 201, reply.text
        assert len(reply.json()["ids"]) == 10_000
        assert client.get("/jobs/largest").json()["queued"] == 10_000
    assert redis_client.xlen(names.INGESTION_STREAM) == 10_000


def test_job_completed_comes_after_every_chunk_of_its_job(
    api: str,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    workers: list[subprocess.Popen[str]],
) -> None:
    with http(api) as client:
        assert client.post("/jobs", json=job_body("ordered", ["x"] * 25)).status_code == 201
    start(workers, redis_server, "record_or_fail")
    wait_until(lambda: job(api, "ordered")["state"] == "done", timeout_s=30)
    types = [
        fields["type"]
        for _, fields in redis_client.xrange(names.EVENTS_STREAM)
        if fields["job_id"] == "ordered"
    ]
    assert types[-1] == "job.completed" and types.count("job.completed") == 1
