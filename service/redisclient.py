"""Building Redis clients from settings; the only place that knows connection options."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from service.config import Settings
from service.rawtext import REDIS_ENCODING_ERRORS

# Blocking reads hold the socket for block_ms, so reads may take that long plus a margin.
SOCKET_MARGIN_S = 5.0
CONNECT_TIMEOUT_S = 3.0
# A burst of clients waits this long for a pooled connection before getting a 503.
POOL_WAIT_S = 5.0


def create_redis(settings: Settings, max_connections: int | None = None) -> Redis:
    """A client over a blocking pool: bursts queue for a connection instead of failing.

    The password may come from the URL or from its own setting. Replies never fail to decode:
    see service.rawtext.
    """
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections or settings.redis_max_connections,
        timeout=POOL_WAIT_S,
        decode_responses=True,
        # Anyone can XADD bytes that are not UTF-8; decoding them must never raise.
        encoding_errors=REDIS_ENCODING_ERRORS,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=settings.block_ms / 1000 + SOCKET_MARGIN_S,
        health_check_interval=30,
        password=password,
    )
    client: Redis = Redis.from_pool(pool)
    return client
