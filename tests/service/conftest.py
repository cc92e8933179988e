"""Settings and a live API for the service tests, against the session's redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from service.core.settings import Settings
from tests.support.live_server import serve
from tests.support.redis_server import RedisServer

FAST_TIMINGS = {"block_ms": 200, "claim_idle_ms": 400, "sse_ping_s": 1.0}


def make_settings(redis_server: RedisServer, **overrides: object) -> Settings:
    values: dict[str, object] = {"redis_url": redis_server.url, **FAST_TIMINGS, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(redis_server: RedisServer, redis_client: redis.Redis) -> Settings:
    return make_settings(redis_server)


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    with serve(settings) as base_url:
        yield base_url
