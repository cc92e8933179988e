"""Scopes on every route and transport: 403 without the scope, and limited tokens held to
their jobs and event types whatever they ask for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from fastapi.routing import APIRoute, APIWebSocketRoute

from harness.redis_server import RedisServer
from service.api.auth import OPEN_PATHS, OPEN_PREFIX, OPTIONAL_TOKEN_PATHS
from service.api.route_rules import WEBSOCKET, rule_for
from service.core.grants import KNOWN_SCOPES
from service.core.settings import Settings
from service.main import create_app
from tests.support.clients import ws_take
from tests.support.live_server import http, serve
from tests.support.scoped_clients import sse_as, ws_url_as
from tests.support.service_settings import make_settings
from tests.support.tokens import ADMIN_TOKEN, JWT_SECRET, mint

EVENTS = "shield:events"
QUEUE = "shield:ingestion_queue"
TASK = {"chunk_id": "c1", "content": "x"}


@pytest.fixture
def scoped_settings(redis_server: RedisServer, redis_client: redis.Redis) -> Settings:
    return make_settings(redis_server, api_token=ADMIN_TOKEN, jwt_secret=JWT_SECRET)


@pytest.fixture
def scoped_api(scoped_settings: Settings) -> Iterator[str]:
    with serve(scoped_settings) as base_url:
        yield base_url


def all_scopes_but(*missing: str) -> str:
    return " ".join(sorted(KNOWN_SCOPES - {"admin", *missing}))


def test_every_route_has_a_rule(scoped_settings: Settings) -> None:
    """A route added without a rule would need admin: this names it, so it gets one."""
    app = create_app(scoped_settings)
    unruled = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if path in OPEN_PATHS or path in OPTIONAL_TOKEN_PATHS or path.startswith(OPEN_PREFIX):
            continue
        if isinstance(route, APIWebSocketRoute):
            methods = {WEBSOCKET}
        elif isinstance(route, APIRoute):
            methods = set(route.methods)
        else:
            methods = set(getattr(route, "methods", None) or ()) - {"HEAD"}
        concrete = path.replace("{entry_id}", "1-0").replace("{name}", "x")
        unruled += [f"{m} {path}" for m in methods if rule_for(m, concrete) is None]
    assert unruled == []


ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/events", {"type": "a.b"}, "events:write"),
    ("GET", "/events/stats", None, "events:read"),
    ("POST", "/tasks", {"job_id": "j", **TASK}, "tasks:write"),
    ("GET", "/tasks/dead-letters", None, "dead-letters"),
    ("POST", "/tasks/dead-letters/1-0/requeue", None, "dead-letters"),
    ("GET", "/metrics", None, "metrics"),
    ("POST", "/tokens", {"scope": "metrics", "ttl_s": 60}, "admin"),
    ("POST", "/agui/ingest", {}, "jobs:write"),
    ("POST", "/agui/ingest", {}, "events:read"),
    ("GET", "/jobs", None, "jobs:read"),
    ("GET", "/jobs/j", None, "jobs:read"),
    ("POST", "/jobs", {"chunks": [{"chunk_id": "c", "content": "x"}]}, "jobs:write"),
    ("DELETE", "/jobs/j", None, "jobs:cancel"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_a_token_without_the_routes_scope_gets_403(
    scoped_api: str, method: str, path: str, body: dict[str, Any] | None, scope: str
) -> None:
    with http(scoped_api, token=mint(all_scopes_but(scope))) as client:
        reply = client.request(method, path, json=body)
    assert reply.status_code == 403, reply.text
    assert scope in reply.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES[:7])
def test_a_token_with_only_the_routes_scope_gets_through(
    scoped_api: str, method: str, path: str, body: dict[str, Any] | None, scope: str
) -> None:
    with http(scoped_api, token=mint(scope)) as client:
        reply = client.request(method, path, json=body)
    # The requeue of a dead letter that does not exist is a 404: the route ran.
    assert reply.status_code in (200, 201, 404), reply.text


async def test_streams_need_events_read(scoped_api: str) -> None:
    lacking = mint(all_scopes_but("events:read"))
    async with httpx.AsyncClient(base_url=scoped_api) as client:
        reply = await client.get("/events/stream", params={"access_token": lacking})
        assert reply.status_code == 403
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url_as(scoped_api, lacking)):
            pass
    assert refused.value.response.status_code == 403
    async with sse_as(scoped_api, mint("events:read")):
        pass
    async with websockets.connect(ws_url_as(scoped_api, mint("events:read"))):
        pass


def test_docs_need_any_valid_token(scoped_api: str) -> None:
    with http(scoped_api, token=mint("metrics")) as client:
        assert client.get("/openapi.json").status_code == 200
    with http(scoped_api) as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401


@pytest.mark.parametrize("event_type", ["ingestion.completed", "job.finished", "worker.started"])
def test_reserved_event_types_are_written_by_an_admin_only(
    scoped_api: str, redis_client: redis.Redis, event_type: str
) -> None:
    """The forged ingestion.completed that finished an AG-UI run no worker had touched."""
    body = {"type": event_type, "job_id": "run-1", "data": {"chunk_id": "run-1-1"}}
    with http(scoped_api, token=mint("events:write")) as writer:
        reply = writer.post("/events", json=body)
    assert reply.status_code == 403
    assert "written by the service only" in reply.json()["detail"]
    assert redis_client.xlen(EVENTS) == 0
    for token in (ADMIN_TOKEN, mint("admin")):
        with http(scoped_api, token=token) as admin:
            assert admin.post("/events", json=body).status_code == 201
    with http(scoped_api, token=mint("events:write")) as writer:
        assert writer.post("/events", json={"type": "ingestion_like.x"}).status_code == 201


def test_a_job_limited_token_writes_only_its_jobs(
    scoped_api: str, redis_client: redis.Redis
) -> None:
    token = mint("tasks:write events:write", jobs=["J1", "batch-*"])
    with http(scoped_api, token=token) as client:
        assert client.post("/tasks", json={"job_id": "J1", **TASK}).status_code == 201
        assert client.post("/tasks", json={"job_id": "batch-9", **TASK}).status_code == 201
        assert client.post("/tasks", json={"job_id": "J2", **TASK}).status_code == 403
        assert client.post("/tasks", json={"job_id": "J10", **TASK}).status_code == 403
        assert client.post("/events", json={"type": "a.b", "job_id": "J1"}).status_code == 201
        assert client.post("/events", json={"type": "a.b", "job_id": "J2"}).status_code == 403
        assert client.post("/events", json={"type": "a.b"}).status_code == 403
    assert redis_client.xlen(QUEUE) == 2
    posted = [f for _, f in redis_client.xrange(EVENTS) if f.get("type") == "a.b"]
    assert len(posted) == 1


def test_a_type_limited_token_writes_only_its_types(scoped_api: str) -> None:
    with http(scoped_api, token=mint("events:write", types=["ui.*"])) as client:
        assert client.post("/events", json={"type": "ui.clicked"}).status_code == 201
        assert client.post("/events", json={"type": "query.done"}).status_code == 403


def publish_as_admin(base_url: str, events: list[tuple[str, str]]) -> None:
    with http(base_url, token=ADMIN_TOKEN) as admin:
        for event_type, job_id in events:
            reply = admin.post("/events", json={"type": event_type, "job_id": job_id})
            assert reply.status_code == 201


MIXED = [("a.x", "J1"), ("a.x", "J2"), ("b.y", "batch-3"), ("a.x", ""), ("b.y", "J1")]


async def test_sse_shows_a_job_limited_token_only_its_jobs(scoped_api: str) -> None:
    token = mint("events:read", jobs=["J1", "batch-*"])
    async with sse_as(scoped_api, token) as reader:
        await asyncio.to_thread(publish_as_admin, scoped_api, MIXED)
        seen = [(m.event, m.json()["job_id"]) for m in await reader.take(3)]
    assert seen == [("a.x", "J1"), ("b.y", "batch-3"), ("b.y", "J1")]
    # Replay too: from the start, the same three.
    async with sse_as(scoped_api, token, {"last_id": "0"}) as reader:
        replayed = [(m.event, m.json()["job_id"]) for m in await reader.take(3)]
        assert replayed == seen
        with pytest.raises(TimeoutError):
            await reader.next(timeout_s=0.5)


async def test_sse_filters_apply_within_the_grant(scoped_api: str) -> None:
    token = mint("events:read", jobs=["J1"], types=["a.*"])
    async with sse_as(scoped_api, token, {"types": "a.x,b.y"}) as reader:
        await asyncio.to_thread(publish_as_admin, scoped_api, MIXED)
        seen = [(m.event, m.json()["job_id"]) for m in await reader.take(1)]
        with pytest.raises(TimeoutError):
            await reader.next(timeout_s=0.5)
    assert seen == [("a.x", "J1")]
    async with httpx.AsyncClient(base_url=scoped_api) as client:
        reply = await client.get("/events/stream", params={"job_id": "J2", "access_token": token})
    assert reply.status_code == 403


async def test_websocket_shows_a_type_limited_token_only_its_types(scoped_api: str) -> None:
    token = mint("events:read", types=["b.*"])
    async with websockets.connect(ws_url_as(scoped_api, token)) as connection:
        await asyncio.to_thread(publish_as_admin, scoped_api, MIXED)
        seen = [(m["type"], m["job_id"]) for m in await ws_take(connection, 2)]
        with pytest.raises(TimeoutError):
            await ws_take(connection, 1, timeout_s=0.5)
    assert seen == [("b.y", "batch-3"), ("b.y", "J1")]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url_as(scoped_api, mint("events:read", jobs=["J1"]),
                                                job_id="J2")):  # fmt: skip
            pass
    assert refused.value.response.status_code == 403


def run_input(run_id: str) -> dict[str, Any]:
    return {
        "threadId": "t",
        "runId": run_id,
        "messages": [{"id": "m1", "role": "user", "content": "a document"}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


def test_agui_runs_only_the_tokens_own_runs(scoped_api: str, redis_client: redis.Redis) -> None:
    token = mint("jobs:write events:read", jobs=["run-a"])
    with http(scoped_api, token=token) as client:
        refused = client.post("/agui/ingest", json=run_input("run-b"))
        assert refused.status_code == 403
        assert redis_client.xlen(QUEUE) == 0
        assert not redis_client.exists("shield:agui:run:run-b")
        with client.stream("POST", "/agui/ingest", json=run_input("run-a")) as reply:
            assert reply.status_code == 200
            first = next(line for line in reply.iter_lines() if line.startswith("data:"))
            assert '"RUN_STARTED"' in first
    assert redis_client.xlen(QUEUE) == 1


def test_a_limited_token_sees_no_entry_contents_in_stats(
    scoped_api: str, redis_client: redis.Redis
) -> None:
    with http(scoped_api, token=ADMIN_TOKEN) as admin:
        admin.post("/tasks", json={"job_id": "other", "chunk_id": "c", "content": "secret"})
        full = admin.get("/events/stats").json()
    assert full["streams"][QUEUE]["last_entry_detail"]["fields"]["content"] == "secret"
    with http(scoped_api, token=mint("events:read", jobs=["J1"])) as limited:
        shown = limited.get("/events/stats").json()
    assert shown["streams"][QUEUE]["first_entry_detail"] is None
    assert shown["streams"][QUEUE]["last_entry_detail"] is None
    assert shown["collected"] is None
    assert "secret" not in str(shown)
    assert shown["streams"][QUEUE]["length"] == 1


def test_health_details_go_to_unlimited_tokens_only(scoped_api: str) -> None:
    with http(scoped_api, token=mint("metrics")) as unlimited:
        assert "streams" in unlimited.get("/health/detailed").json()
    with http(scoped_api, token=mint("events:read", jobs=["J1"])) as limited:
        assert limited.get("/health/detailed").json() == {"status": "up"}
    with http(scoped_api, token="not-a-token") as wrong:
        assert wrong.get("/health/detailed").status_code == 401


def test_dead_letters_need_an_unlimited_token(scoped_api: str) -> None:
    with http(scoped_api, token=mint("dead-letters", jobs=["J1"])) as limited:
        assert limited.get("/tasks/dead-letters").status_code == 403
        assert limited.post("/tasks/dead-letters/1-0/requeue").status_code == 403
    with http(scoped_api, token=mint("dead-letters")) as unlimited:
        assert unlimited.get("/tasks/dead-letters").status_code == 200
