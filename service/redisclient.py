"""Building the Redis client from settings; the only place that knows connection options."""

from __future__ import annotations

from redis.asyncio import Redis

from service.config import Settings

# Blocking reads hold the socket for block_ms, so reads may take that long plus a margin.
SOCKET_MARGIN_S = 5.0
CONNECT_TIMEOUT_S = 3.0


def create_redis(settings: Settings) -> Redis:
    """A client with decoded responses; the password may come from the URL or its own setting."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client: Redis = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=settings.block_ms / 1000 + SOCKET_MARGIN_S,
        health_check_interval=30,
        password=password,
    )
    return client
