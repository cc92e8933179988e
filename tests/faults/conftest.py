"""Fixtures the fault tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.redis_server import RedisServer
from tests.support.processes import api_server
from tests.support.sentinel_cluster import Cluster


@pytest.fixture
def api_process(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[tuple[str, int]]:
    """A uvicorn API process on the test Redis: its base URL and pid."""
    with api_server(redis_server.url, block_ms=1000) as (base_url, process):
        yield base_url, process.pid


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A primary, a replica and three sentinels on this machine, stopped afterwards."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
