"""Writes, bad input, auth, stats, health and metrics over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis
import websockets

from harness.redis_server import RedisServer
from service.core import names
from tests.support.live_server import http, serve
from tests.support.service_settings import make_settings

TOKEN = "s3cret-token"
GROUPS = {
    names.INGESTION_STREAM: list(names.INGESTION_GROUPS),
    names.EVENTS_STREAM: list(names.EVENT_GROUPS),
}


@pytest.fixture
def client(api: str) -> Iterator[httpx.Client]:
    with http(api) as session:
        yield session


def test_post_event_is_stored_with_original_fields(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    reply = client.post("/events", json={"type": "test.event", "job_id": "j", "data": {"a": 1}})
    assert reply.status_code == 201
    body = reply.json()
    [(entry_id, fields)] = redis_client.xrange("shield:events", body["id"], body["id"])
    assert fields["event_id"] == body["event_id"]
    assert fields["type"] == "test.event"
    assert fields["job_id"] == "j"
    assert fields["data"] == '{"a":1}'
    assert fields["metadata"] == "{}"
    assert fields["timestamp"].endswith("+00:00")


def test_post_task_is_stored_with_original_fields(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    reply = client.post(
        "/tasks",
        json={"job_id": "j", "chunk_id": "c", "content": "text", "metadata": {"lang": "en"}},
    )
    assert reply.status_code == 201
    [(_, fields)] = redis_client.xrange(
        "shield:ingestion_queue", reply.json()["id"], reply.json()["id"]
    )
    assert set(fields) == {
        "job_id",
        "chunk_id",
        "content",
        "source_uri",
        "source_type",
        "metadata",
        "retry_count",
        "timestamp",
    }
    assert fields["retry_count"] == "0"
    assert fields["metadata"] == '{"lang":"en"}'


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/events", b"{not json", 422),
        ("/events", b'{"type": "nodot"}', 422),
        ("/events", b'{"type": "Bad.Type"}', 422),
        ("/events", b'{"type": "a.b", "data": [1]}', 422),
        ("/events", b'{"type": "a.b", "job_id": 5}', 422),
        ("/events", b'{"type": "a.b", "extra": 1}', 422),
        ("/events", b"[]", 422),
        ("/tasks", b'{"job_id": "j", "chunk_id": "c"}', 422),
        ("/tasks", b'{"job_id": "j", "chunk_id": "c", "content": ""}', 422),
        ("/tasks", b'{"job_id": 1, "chunk_id": "c", "content": "x"}', 422),
        ("/tasks", b'{"job_id": "j", "chunk_id": "c", "content": "x", "metadata": "x"}', 422),
    ],
)
def test_bad_bodies_get_422_and_write_nothing(
    client: httpx.Client, redis_client: redis.Redis, path: str, body: bytes, status: int
) -> None:
    reply = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    assert redis_client.xlen("shield:events") == 0
    assert redis_client.xlen("shield:ingestion_queue") == 0


def test_body_over_the_limit_is_413(client: httpx.Client, redis_client: redis.Redis) -> None:
    big = {"type": "a.b", "data": {"blob": "x" * 70000}}
    assert client.post("/events", json=big).status_code == 413
    task = {"job_id": "j", "chunk_id": "c", "content": "x" * 70000}
    assert client.post("/tasks", json=task).status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"type": "a.b", "data": {"blob": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}}'

    chunked = client.post("/events", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert redis_client.xlen("shield:events") == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/tasks/dead-letters?after=zzz"),
        ("POST", "/tasks/dead-letters/not-an-id/requeue"),
        ("GET", "/events/stream?last_id=1-2-3"),
    ],
)
def test_bad_ids_are_400(client: httpx.Client, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 400


def test_requeue_of_unknown_dead_letter_is_404(client: httpx.Client) -> None:
    assert client.post("/tasks/dead-letters/1-0/requeue").status_code == 404


def test_stats_list_both_streams_and_their_groups(client: httpx.Client) -> None:
    client.post("/events", json={"type": "test.event"})
    stats = client.get("/events/stats").json()
    assert stats["dead_letters"] == 0
    assert stats["timestamp"].endswith("+00:00")
    events = stats["streams"]["shield:events"]
    assert events["length"] == 1
    assert events["first_entry_detail"]["fields"]["type"] == "test.event"
    assert events["first_entry"] == events["first_entry_detail"]["id"]
    assert sorted(events["consumer_groups"]) == sorted(GROUPS["shield:events"])
    group = events["groups"][0]
    assert set(group) == {
        "name",
        "consumers",
        "pending",
        "last_delivered_id",
        "entries_read",
        "lag",
        "lag_known",
        "missed_entries",
    }
    assert group["lag"] == 1
    assert sorted(stats["streams"]["shield:ingestion_queue"]["consumer_groups"]) == sorted(
        GROUPS["shield:ingestion_queue"]
    )


def test_health_detailed_is_up_then_degraded(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    health = client.get("/health/detailed").json()
    assert health["status"] == "up"
    assert health["latency_ms"] >= 0
    assert {name: sorted(s["groups"]) for name, s in health["streams"].items()} == {
        name: sorted(groups) for name, groups in GROUPS.items()
    }
    redis_client.xgroup_destroy("shield:events", "ag-ui-frontend")
    degraded = client.get("/health/detailed").json()
    assert degraded["status"] == "degraded"
    assert degraded["missing"] == ["group shield:events/ag-ui-frontend"]


def test_metrics_expose_counters(client: httpx.Client, redis_client: redis.Redis) -> None:
    client.post("/events", json={"type": "test.event"})
    redis_client.hset("shield:ingestion_queue:counters", mapping={"acked": 7, "dead_lettered": 2})
    text = client.get("/metrics").text
    assert "shield_events_published_total 1.0" in text
    assert 'shield_tasks_total{outcome="acked"} 7.0' in text
    assert 'shield_tasks_total{outcome="dead_lettered"} 2.0' in text
    assert 'shield_tasks_total{outcome="retried"} 0.0' in text
    assert 'shield_connected_clients{transport="sse"} 0.0' in text
    assert 'shield_events_delivered_total{transport="ws"} 0.0' in text
    assert "shield_redis_latency_seconds_count 1.0" in text


@pytest.fixture
def secured(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[str]:
    with serve(make_settings(redis_server, api_token=TOKEN)) as base_url:
        yield base_url


def test_token_required_everywhere_but_health(secured: str) -> None:
    with http(secured) as anonymous:
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/health/detailed").status_code == 200
        for method, path in [
            ("POST", "/events"),
            ("POST", "/tasks"),
            ("GET", "/events/stats"),
            ("GET", "/events/stream"),
            ("GET", "/tasks/dead-letters"),
            ("GET", "/metrics"),
            ("GET", "/docs"),
        ]:
            reply = anonymous.request(method, path)
            assert reply.status_code == 401, path
            assert reply.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/events/stats", params={"access_token": TOKEN}).status_code == 401
    with http(secured, token="wrong") as wrong:
        assert wrong.get("/events/stats").status_code == 401
    with http(secured, token=TOKEN) as allowed:
        assert allowed.get("/events/stats").status_code == 200
        assert allowed.post("/events", json={"type": "a.b"}).status_code == 201


async def test_sse_and_ws_accept_access_token_query(secured: str) -> None:
    async with httpx.AsyncClient(base_url=secured) as client:
        async with client.stream("GET", "/events/stream", params={"access_token": TOKEN}) as reply:
            assert reply.status_code == 200
    ws_base = secured.replace("http://", "ws://")
    async with websockets.connect(f"{ws_base}/events/ws?access_token={TOKEN}&last_id=$"):
        pass
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{ws_base}/events/ws?access_token=nope"):
            pass
    assert refused.value.response.status_code == 401
