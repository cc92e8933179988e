"""A cap on handler calls per second across every worker on every host.

A token bucket in Redis, taken from in one script (lua/rate_limit.lua) by the Redis server's
clock. A task held back waits in its worker, still leased, and no attempt is counted.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from redis.asyncio import Redis

from service.core import names
from service.core.lua import LuaScript
from service.core.settings import Settings

# Waiters wake a little apart, so a refilled token is not fought over by all of them at once.
WAKE_JITTER = 0.2


class HandlerRateLimit:
    """Shared by every worker that uses the same task stream."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._key = names.handler_rate_key(settings.stream_ingestion)
        self._rate_per_s = settings.handler_rate_per_s
        self._take = LuaScript(redis, "service.tasks", "rate_limit")

    async def acquire(self, should_stop: Callable[[], bool]) -> bool:
        """Wait for a call's token; False when the worker is stopping first."""
        while not should_stop():
            wait_ms = int(await self._take([self._key], [repr(self._rate_per_s)]))
            if wait_ms <= 0:
                return True
            await asyncio.sleep(wait_ms / 1000 * (1 + WAKE_JITTER * random.random()))
        return False
