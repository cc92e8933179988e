"""Fixtures shared by every suite: one real redis-server for the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import RedisServer


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
