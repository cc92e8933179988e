"""Hostile request bodies, ids and counters get a 4xx or are shrugged off, never a 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import redis
import websockets

from tests.support.clients import ws_take
from tests.support.event_api import publish, sse, ws_url
from tests.support.live_server import http

EVENTS = "shield:events"


@pytest.fixture
def client(api: str) -> Iterator[httpx.Client]:
    with http(api) as session:
        yield session


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "a.b", "data": {"x": NaN}}',
        b'{"type": "a.b", "data": {"x": Infinity}}',
        b'{"type": "a.b", "metadata": {"x": [-Infinity]}}',
        b'{"type": "a.b", "job_id": "\\ud800"}',
        b'{"type": "a.b", "job_id": "\\udcff"}',
        b'{"type": "a.b", "data": {"x": "\\ud800"}}',
        b'{"type": "a.b", "data": {"\\udfff": 1}}',
        b'{"type": "a.b", "metadata": {"x": ["\\ud83d"]}}',
        b'{"type": "\\ud800.b"}',
        b'{"type": "a.b", "data": {"x": ' + _deep(956) + b"}}",
        b'{"type": "a.b", "data": {"x": ' + _deep(40) + b"}}",
        b'{"type": "a.b", "data": {"x": ' + _deep(5000) + b"}}",
    ],
)
def test_unsafe_event_bodies_get_4xx_and_write_nothing(
    client: httpx.Client, redis_client: redis.Redis, body: bytes
) -> None:
    reply = client.post("/events", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code in (400, 422), reply.text
    reply.json()
    assert redis_client.xlen(EVENTS) == 0


TASK = b'"job_id": "j", "chunk_id": "c", "content": "x"'


@pytest.mark.parametrize(
    "body",
    [
        b"{" + TASK + b', "metadata": {"x": NaN}}',
        b"{" + TASK + b', "metadata": {"x": [Infinity]}}',
        b'{"job_id": "\\ud800", "chunk_id": "c", "content": "x"}',
        b'{"job_id": "j", "chunk_id": "c", "content": "\\udcff"}',
        b'{"job_id": "j", "chunk_id": "\\udfff", "content": "x"}',
        b"{" + TASK + b', "source_uri": "\\ud83d"}',
        b"{" + TASK + b', "metadata": {"\\ud800": 1}}',
        b"{" + TASK + b', "metadata": {"x": ' + _deep(956) + b"}}",
        b"{" + TASK + b', "metadata": {"x": ' + _deep(40) + b"}}",
    ],
)
def test_unsafe_task_bodies_get_4xx_and_write_nothing(
    client: httpx.Client, redis_client: redis.Redis, body: bytes
) -> None:
    reply = client.post("/tasks", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code in (400, 422), reply.text
    reply.json()
    assert redis_client.xlen("shield:ingestion_queue") == 0


def test_nan_is_refused_with_422_and_named(client: httpx.Client) -> None:
    reply = client.post(
        "/events",
        content=b'{"type": "a.b", "data": {"x": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 422
    assert "NaN" in reply.json()["detail"][0]["msg"]


def test_non_numeric_worker_counters_keep_metrics_working(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    counters = "shield:ingestion_queue:counters"
    redis_client.hset(counters, mapping={"acked": 4, "retried": 1})
    assert 'shield_tasks_total{outcome="acked"} 4.0' in client.get("/metrics").text
    redis_client.hset(counters, mapping={"acked": "lots", "retried": b"\xff", "dead_lettered": 2})
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert 'shield_tasks_total{outcome="acked"} 4.0' in reply.text
    assert 'shield_tasks_total{outcome="retried"} 1.0' in reply.text
    assert 'shield_tasks_total{outcome="dead_lettered"} 2.0' in reply.text


def test_every_counter_is_named_total_and_task_outcomes_are_counters(
    client: httpx.Client,
) -> None:
    types = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
    counters = [name for name, kind in types.items() if kind == "counter"]
    assert all(name.endswith("_total") for name in counters), counters
    assert types["shield_tasks_total"] == "counter"
    assert types["shield_event_entries_skipped_total"] == "counter"
    assert "shield_tasks" not in types


@pytest.mark.parametrize(
    "bad_id", ["18446744073709551615-18446744073709551615", "9999999999999-0", "9999999999999"]
)
async def test_impossible_and_future_resume_ids_get_400(api: str, bad_id: str) -> None:
    await publish(api, 2)
    async with httpx.AsyncClient(base_url=api, timeout=10) as client:
        # Streamed, so that a wrong 200 fails the test instead of hanging it.
        for params, headers in (({"last_id": bad_id}, {}), ({}, {"Last-Event-ID": bad_id})):
            async with client.stream(
                "GET", "/events/stream", params=params, headers=headers
            ) as reply:
                assert reply.status_code == 400
                assert "stream id" in json.loads(await reply.aread())["detail"]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url(api, f"?last_id={bad_id}"), open_timeout=10):
            pass
    assert refused.value.response.status_code == 400


async def test_the_last_id_sent_is_not_in_the_future(api: str) -> None:
    ids = await publish(api, 2)
    async with httpx.AsyncClient(base_url=api) as client:
        async with client.stream("GET", "/events/stream", params={"last_id": ids[-1]}) as reply:
            assert reply.status_code == 200


async def test_data_keys_cannot_relabel_an_event_and_both_transports_agree(api: str) -> None:
    spoof = {"event_id": "FAKE", "job_id": "spoofed", "timestamp": "then", "n": 1}
    async with sse(api, "?last_id=$&job_id=real") as real, sse(api, "?last_id=$&job_id=spoofed"):
        async with websockets.connect(ws_url(api, "?last_id=$&job_id=real")) as connection:
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=api) as client:
                reply = await client.post(
                    "/events",
                    json={"type": "a.b", "job_id": "real", "data": spoof, "metadata": {"m": 1}},
                )
            created = reply.json()
            message = await real.next()
            [ws_message] = await ws_take(connection, 1)
    payload = message.json()
    assert message.id == created["id"]
    assert payload["event_id"] == created["event_id"] == ws_message["event_id"]
    assert payload["job_id"] == "real" == ws_message["job_id"]
    assert payload["timestamp"] == ws_message["timestamp"] != "then"
    assert payload["metadata"] == ws_message["metadata"] == {"m": 1}
    assert payload["n"] == 1 and ws_message["data"] == spoof
