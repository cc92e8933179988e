"""The API and the workers as the Redis ACL users infra creates, on a real redis-server whose
default user is off: everything they do is allowed, and each is refused what it never needs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import websockets

from harness.processes import terminate
from harness.redis_server import RedisServer
from harness.waiting import wait_until
from service.agui import run_store
from service.core import redis_acl
from service.core.redis_acl import API_USER, WORKER_USER, StreamNames
from tests.service.handlers import FAIL_MARK
from tests.support.agui_input import run_input
from tests.support.event_api import sse, ws_url
from tests.support.processes import api_server, service_env, start_worker

ADMIN_USER = "test-admin"
PASSWORDS = {ADMIN_USER: "admin-secret", API_USER: "api-secret", WORKER_USER: "worker-secret"}
TOKEN = "acl-test-token"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of its own with the service's two users, an admin for the test, and
    the default user off, as the lab's Redis is after a deploy."""
    server = RedisServer(Path(tmp_path_factory.mktemp("acl-redis")), appendonly=False)
    server.start()
    with redis.Redis(port=server.port, decode_responses=True) as setup:
        streams = StreamNames()
        for user, rules in (
            (API_USER, redis_acl.api_rules(streams)),
            (WORKER_USER, redis_acl.worker_rules(streams)),
        ):
            setup.execute_command(*redis_acl.setuser_arguments(user, rules, PASSWORDS[user]))
        setup.execute_command(
            "ACL", "SETUSER", ADMIN_USER, "on", ">" + PASSWORDS[ADMIN_USER], "+@all", "~*", "&*"
        )
        setup.execute_command("ACL", "SETUSER", "default", "off")
    try:
        yield server
    finally:
        server.stop()


def as_user(server: RedisServer, user: str) -> redis.Redis:
    return redis.Redis(
        port=server.port, username=user, password=PASSWORDS[user], decode_responses=True
    )


@pytest.fixture
def admin(acl_redis: RedisServer) -> Iterator[redis.Redis]:
    """The test's own view of Redis: emptied, with an empty ACL log."""
    client = as_user(acl_redis, ADMIN_USER)
    client.flushall()
    client.execute_command("ACL", "LOG", "RESET")
    try:
        yield client
    finally:
        client.close()


def service_users() -> dict[str, object]:
    """The settings infra writes to the env file when the stack has ACL users."""
    return {
        "redis_username": API_USER,
        "redis_password": PASSWORDS[API_USER],
        "redis_worker_username": WORKER_USER,
        "redis_worker_password": PASSWORDS[WORKER_USER],
        "api_token": TOKEN,
        "block_ms": 200,
        "claim_idle_ms": 400,
        "retry_attempts": 2,
        # The handler rate limit's token bucket (rate_limit.lua) runs too.
        "handler_rate_per_s": 100,
        "task_handler": "tests.service.handlers:fail_marked_without_redis",
    }


def dead_lettered_events(admin: redis.Redis) -> int:
    return sum(
        fields["type"] == "ingestion.dead_lettered" for _, fields in admin.xrange("shield:events")
    )


def refusals(admin: redis.Redis) -> list[str]:
    """What Redis refused since the test began, one line each."""
    return [
        f"{entry['username']}: {entry['reason']} {entry['object']}"
        for entry in admin.execute_command("ACL", "LOG")
    ]


async def exercise(base_url: str) -> None:
    """A task that completes and one that is dead-lettered and requeued, seen over SSE and
    WebSocket; stats, health, metrics, a published event and an AG-UI run."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=20) as client:
        async with sse(base_url, "?last_id=0&job_id=acl-job", headers) as stream:
            for chunk, content in (("ok", "fine"), ("bad", f"doomed {FAIL_MARK}")):
                body = {"job_id": "acl-job", "chunk_id": chunk, "content": content}
                reply = await client.post("/tasks", json=body)
                assert reply.status_code == 201, reply.text
            seen: set[str] = set()
            while not {"ingestion.completed", "ingestion.dead_lettered"} <= seen:
                seen.add((await stream.next(timeout_s=20)).event)

        async def dead_letters() -> list[dict[str, object]]:
            page = await client.get("/tasks/dead-letters")
            assert page.status_code == 200, page.text
            letters: list[dict[str, object]] = page.json()["dead_letters"]
            return letters

        letters = await dead_letters()
        assert [letter["fields"]["chunk_id"] for letter in letters] == ["bad"]  # type: ignore[index]
        requeued = await client.post(f"/tasks/dead-letters/{letters[0]['id']}/requeue")
        assert requeued.status_code == 201, requeued.text

        published = await client.post("/events", json={"type": "acl.check", "data": {"n": 1}})
        assert published.status_code == 201, published.text
        async with websockets.connect(
            ws_url(base_url, f"?last_id=0&types=acl.check&access_token={TOKEN}")
        ) as socket:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert frame["type"] == "acl.check"

        for path in ("/events/stats", "/metrics"):
            answer = await client.get(path)
            assert answer.status_code == 200, f"{path}: {answer.text}"
        health = await client.get("/health/detailed")
        assert health.json()["status"] == "up", health.text

        # Jobs: submitted (twice with one Idempotency-Key), read, listed, one cancelled.
        job = {"job_id": "acl-doc", "chunks": [{"chunk_id": "c1", "content": "fine"}]}
        for _ in range(2):
            submitted = await client.post(
                "/jobs", json=job, headers={"Idempotency-Key": "acl-key-1"}
            )
            assert submitted.status_code == 201, submitted.text
        assert submitted.headers.get("Idempotent-Replayed") == "true"
        for path in ("/jobs/acl-doc", "/jobs?limit=5"):
            answer = await client.get(path)
            assert answer.status_code == 200, f"{path}: {answer.text}"
        doomed = {"job_id": "acl-cancelled", "chunks": [{"chunk_id": "c1", "content": "x"}]}
        assert (await client.post("/jobs", json=doomed)).status_code == 201
        cancelled = await client.delete("/jobs/acl-cancelled")
        assert cancelled.status_code in (202, 409), cancelled.text

        async with client.stream(
            "POST", "/agui/ingest", json=run_input("acl-run", "one short document")
        ) as run:
            assert run.status_code == 200, (await run.aread()).decode()
            text = ""
            async for piece in run.aiter_text():
                text += piece
                if "RUN_FINISHED" in text or "RUN_ERROR" in text:
                    break
        assert "RUN_FINISHED" in text, text


def test_api_and_workers_run_as_their_acl_users_with_nothing_refused(
    acl_redis: RedisServer, admin: redis.Redis, workers: list
) -> None:
    settings = service_users()
    url = acl_redis.url
    workers.append(start_worker(service_env(url, **settings)))
    with api_server(url, **settings) as (base_url, _):
        asyncio.run(exercise(base_url))
        # The requeued task dead-letters again once its attempts are spent; by then every
        # worker path (read, fail, retry, promote, dead-letter, ack) has run.
        wait_until(
            lambda: dead_lettered_events(admin) == 2,
            20,
            describe="the requeued task to be dead-lettered again",
        )
    terminate(workers)
    assert refusals(admin) == []


@pytest.mark.parametrize(
    ("user", "command"),
    [
        pytest.param(WORKER_USER, ("FLUSHALL",), id="worker FLUSHALL"),
        pytest.param(WORKER_USER, ("CONFIG", "GET", "maxmemory"), id="worker CONFIG"),
        pytest.param(WORKER_USER, ("KEYS", "*"), id="worker KEYS"),
        pytest.param(
            WORKER_USER, ("HGETALL", "shield:collected:events-by-type"), id="worker collected"
        ),
        pytest.param(WORKER_USER, ("HSET", "shield:agui:run:r1", "a", "b"), id="worker AG-UI run"),
        pytest.param(WORKER_USER, ("DEL", "shield:ingestion_queue"), id="worker DEL stream"),
        pytest.param(
            WORKER_USER, ("GET", "shield:idempotency:tasks:k"), id="worker idempotency record"
        ),
        pytest.param(API_USER, ("FLUSHDB",), id="api FLUSHDB"),
        pytest.param(API_USER, ("SET", "other:key", "x"), id="api key outside shield"),
        pytest.param(API_USER, ("XADD", "other:stream", "*", "a", "b"), id="api stream outside"),
        pytest.param(API_USER, ("DEL", "shield:ingestion_queue"), id="api DEL stream"),
        pytest.param(API_USER, ("SET", "shield:events", "x"), id="api SET over a stream"),
        pytest.param(API_USER, ("EVAL", "return 1", "0"), id="api EVAL of its own text"),
        pytest.param(API_USER, ("ACL", "LIST"), id="api ACL"),
        pytest.param(API_USER, ("SUBSCRIBE", "shield:anything"), id="api pub/sub"),
        pytest.param(API_USER, ("SCRIPT", "FLUSH"), id="api SCRIPT FLUSH"),
    ],
)
def test_each_user_is_refused_what_it_never_needs(
    acl_redis: RedisServer, admin: redis.Redis, user: str, command: tuple[str, ...]
) -> None:
    with as_user(acl_redis, user) as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)


def test_the_thread_and_idempotency_keys_are_reachable_by_the_api_through_its_selector(
    acl_redis: RedisServer, admin: redis.Redis
) -> None:
    thread_key = run_store.thread_key("t1")
    with as_user(acl_redis, API_USER) as client:
        assert client.set(thread_key, "job-1")
        assert client.get(thread_key) == "job-1"
        assert client.delete(thread_key) == 1
        assert client.set("shield:idempotency:tasks:k1", "record", nx=True, ex=60)
        assert client.get("shield:idempotency:tasks:k1") == "record"
        # SET reaches nothing else: not a stream's name, not a run record.
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(run_store.run_key("r1"), "x")


def test_the_default_user_is_off(acl_redis: RedisServer) -> None:
    with redis.Redis(port=acl_redis.port) as anonymous:
        with pytest.raises(
            (
                redis.exceptions.AuthenticationError,
                redis.exceptions.NoPermissionError,
                redis.exceptions.ResponseError,
            )
        ):
            anonymous.ping()


def test_the_rules_know_the_agui_run_keys_as_the_run_store_names_them() -> None:
    assert redis_acl.AGUI_RUN_PREFIX == run_store.RUN_KEY_PREFIX
    assert redis_acl.AGUI_THREAD_PREFIX == run_store.THREAD_KEY_PREFIX


SHARED_COMMANDS = (
    "+auth +hello +select +ping +time +wait +multi +exec +discard +evalsha +script|load"
    " +script|exists +xadd +xreadgroup +xack +xautoclaim +xclaim +xpending +xrange +xrevrange"
    " +xlen +xdel +xtrim +xinfo|stream +xinfo|groups +xgroup|create +exists +hget +hmget +hset"
    " +hsetnx +hdel +hgetall +hincrby +hincrbyfloat +pexpire +zadd +zcard +zrange"
    " +zrangebyscore +zrem +expire +persist +sadd +srem +smismember"
)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param(
            redis_acl.api_rules(StreamNames()),
            "on resetkeys resetchannels -@all " + SHARED_COMMANDS
            + " +xread +xgroup|setid +xinfo|consumers +zrevrangebyscore"
            " ~shield:ingestion_queue ~shield:ingestion_queue:* ~shield:events ~shield:events:*"
            " ~shield:collected:* ~shield:agui:run:* ~shield:idempotency:*"
            " (+set +get +del ~shield:agui:thread:* ~shield:idempotency:*)",
            id="api",
        ),
        pytest.param(
            redis_acl.worker_rules(StreamNames()),
            "on resetkeys resetchannels -@all " + SHARED_COMMANDS
            + " ~shield:ingestion_queue ~shield:ingestion_queue:* ~shield:events",
            id="worker",
        ),
        pytest.param(
            redis_acl.worker_rules(StreamNames("q[1]*", "ev?")),
            "on resetkeys resetchannels -@all " + SHARED_COMMANDS
            + " ~q\\[1\\]\\* ~q\\[1\\]\\*:* ~ev\\?",
            id="stream names with glob characters match only themselves",
        ),
    ],
)  # fmt: skip
def test_rules_are_exactly(rules: list[str], expected: str) -> None:
    assert " ".join(rules) == expected


def test_setuser_resets_the_user_and_gives_only_the_password_hash() -> None:
    assert redis_acl.setuser_arguments("u", ["on", "+ping"], "pw") == [
        "ACL", "SETUSER", "u", "reset",
        "#30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4",
        "on", "+ping",
    ]  # fmt: skip
