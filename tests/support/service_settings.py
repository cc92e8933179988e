"""The service's Settings as tests build them: the session's redis-server and fast timings."""

from __future__ import annotations

from harness.redis_server import RedisServer
from service.core.settings import Settings

FAST_TIMINGS = {"block_ms": 200, "claim_idle_ms": 400, "sse_ping_s": 1.0}


def make_settings(redis_server: RedisServer, **overrides: object) -> Settings:
    """Settings on redis_server with FAST_TIMINGS, no env file, and the given overrides."""
    values: dict[str, object] = {"redis_url": redis_server.url, **FAST_TIMINGS, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
