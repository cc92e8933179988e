"""Fixtures shared by every suite: one real redis-server for the session, Settings and a live
API on it, and the worker processes a test starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.redis_server import RedisServer
from service.core.settings import Settings
from tests.support.live_server import serve
from tests.support.processes import WorkerProcesses
from tests.support.service_settings import make_settings


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain sync client on an empty database, for setting up and checking."""
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def settings(redis_server: RedisServer, redis_client: redis.Redis) -> Settings:
    """Settings on the session's redis-server, emptied for this test, with fast timings."""
    return make_settings(redis_server)


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    """The real app served by uvicorn in this process; its base URL."""
    with serve(settings) as base_url:
        yield base_url


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcesses]:
    """The worker processes a test starts (workers.start, or appended); each is killed at
    the end if it is still running."""
    started = WorkerProcesses(tmp_path)
    yield started
    started.kill_all()
