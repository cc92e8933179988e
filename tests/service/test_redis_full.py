"""A Redis at its maxmemory with noeviction refuses writes: the API says so with a clear 503
and Retry-After, writes nothing half-way, reads still answer, and writes resume once there
is room again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from harness.redis_server import RedisServer
from tests.support.agui_input import run_input
from tests.support.processes import api_server

TASK = {"job_id": "full-job", "chunk_id": "c1", "content": "some text"}


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path / "redis", appendonly=False, extra_args=["--maxmemory-policy", "noeviction"]
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fill_up(client: redis.Redis) -> None:
    """Set maxmemory below what Redis already uses, as a Redis that has filled up."""
    used_bytes = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used_bytes // 2))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/tasks", TASK, id="a task"),
        pytest.param("/events", {"type": "full.check", "data": {}}, id="an event"),
        pytest.param("/agui/ingest", run_input("full-run", "a document"), id="an AG-UI run"),
    ],
)
def test_a_write_refused_for_memory_is_a_clear_503(
    full_redis: RedisServer, path: str, body: dict[str, object]
) -> None:
    with (
        api_server(full_redis.url) as (base_url, _),
        redis.Redis(port=full_redis.port, decode_responses=True) as admin,
        httpx.Client(base_url=base_url, timeout=10) as client,
    ):
        before = {key: admin.type(key) for key in admin.keys("*")}
        fill_up(admin)
        refused = client.post(path, json=body)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        assert refused.json()["detail"] == (
            "redis is full (its maxmemory, with noeviction): nothing was written; retry later"
        )
        assert {key: admin.type(key) for key in admin.keys("*")} == before
        assert client.get("/events/stats").status_code == 200
        admin.config_set("maxmemory", "0")
        assert client.post("/tasks", json=TASK).status_code == 201
