"""Building Redis clients from settings; the only place that knows connection options.

With SHIELD_REDIS_SENTINELS set, clients find the primary through Sentinel and follow a
failover by themselves: a connection to a primary that was demoted fails, and the next one
asks the sentinels again.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis import exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.typing import EncodableT

from service.core.raw_text import REDIS_ENCODING_ERRORS
from service.core.settings import Settings

# Blocking reads hold the socket for block_ms, so reads may take that long plus a margin.
SOCKET_MARGIN_S = 5.0
CONNECT_TIMEOUT_S = 3.0
# A burst of clients waits this long for a pooled connection before getting a 503.
POOL_WAIT_S = 5.0
# A dropped connection (Redis restarted, a failover) is retried before a request fails.
RETRIES = 3
RETRY_BACKOFF = {"base": 0.05, "cap": 1.0}


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool with the blocking pool's queueing for a free connection."""


def _connection_options(settings: Settings, max_connections: int | None) -> dict[str, Any]:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    options: dict[str, Any] = {
        "max_connections": max_connections or settings.redis_max_connections,
        "timeout": POOL_WAIT_S,
        "decode_responses": True,
        # Anyone can XADD bytes that are not UTF-8; decoding them must never raise.
        "encoding_errors": REDIS_ENCODING_ERRORS,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": settings.block_ms / 1000 + SOCKET_MARGIN_S,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(**RETRY_BACKOFF), RETRIES),
        "retry_on_error": [exceptions.ConnectionError, exceptions.TimeoutError],
        # No CLIENT SETINFO on connect: Redis 7.0 does not know it, and the ACL users
        # (service.core.redis_acl) are not allowed it.
        "lib_name": None,
        "lib_version": None,
    }
    if password is not None:
        options["password"] = password
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    return options


def create_redis(settings: Settings, max_connections: int | None = None) -> Redis:
    """A client over a blocking pool: bursts queue for a connection instead of failing.

    The password may come from the URL or from its own setting. Replies never fail to decode:
    see service.rawtext.
    """
    options = _connection_options(settings, max_connections)
    if settings.redis_sentinels:
        return _sentinel_client(settings, options)
    pool = BlockingConnectionPool.from_url(settings.redis_url, **options)
    pool.connection_class = packing_in_c(pool.connection_class)
    client: Redis = Redis.from_pool(pool)
    return client


def _sentinel_client(settings: Settings, options: dict[str, Any]) -> Redis:
    from_url = {
        name: value
        for name, value in parse_url(settings.redis_url).items()
        if name not in ("host", "port", "path")
    }
    options = {**from_url, **options}
    # The sentinels share the data nodes' password, when there is one.
    sentinel_options = {"password": options["password"]} if "password" in options else {}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinel_addresses,
        sentinel_kwargs={**sentinel_options, "socket_timeout": CONNECT_TIMEOUT_S},
        **options,
    )
    client: Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        redis_class=Redis,
        connection_pool_class=BlockingSentinelConnectionPool,
    )
    pool = client.connection_pool
    pool.connection_class = packing_in_c(pool.connection_class)
    return client


class _PacksInC(AbstractConnection):
    """Packs commands with hiredis, as redis-py's sync client does and its asyncio one does
    not: the Python packer was a quarter of a worker's time. What hiredis cannot pack (a lone
    surrogate, kept from bytes that were not UTF-8; a bool) goes the Python way, which
    encodes with surrogateescape or raises as before."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        command = args
        # As redis-py does: a command name with a space ("XINFO GROUPS") is several words.
        if isinstance(args[0], str):
            command = (*args[0].encode().split(), *args[1:])
        elif isinstance(args[0], bytes) and b" " in args[0]:
            command = (*args[0].split(), *args[1:])
        try:
            # hiredis's stub types the argument as a 1-tuple; it takes any length.
            return [hiredis.pack_command(command)]  # type: ignore[arg-type]
        except (TypeError, UnicodeEncodeError):
            return super().pack_command(*args)


def packing_in_c(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The pool's connection class, packing commands with hiredis."""
    return type(f"{connection_class.__name__}PackingInC", (_PacksInC, connection_class), {})
