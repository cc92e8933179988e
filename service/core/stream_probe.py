"""Reading XINFO for several streams in one round trip."""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.core.stream_stats import StreamInfo


def _is_missing_key(reply: object) -> bool:
    return isinstance(reply, ResponseError) and "no such key" in str(reply).lower()


async def read_stream_infos(redis: Redis, streams: Sequence[str]) -> list[StreamInfo]:
    """XINFO STREAM and XINFO GROUPS of each stream; a missing stream gives info None."""
    async with redis.pipeline(transaction=False) as pipeline:
        for stream in streams:
            pipeline.xinfo_stream(stream)
            pipeline.xinfo_groups(stream)
        replies = await pipeline.execute(raise_on_error=False)
    infos: list[StreamInfo] = []
    for index, stream in enumerate(streams):
        info, groups = replies[2 * index], replies[2 * index + 1]
        if _is_missing_key(info):
            infos.append(StreamInfo(stream, None))
            continue
        for reply in (info, groups):
            if isinstance(reply, Exception):
                raise reply
        infos.append(StreamInfo(stream, info, groups))
    return infos


async def ping_ms(redis: Redis) -> float:
    """Round-trip time of PING in milliseconds."""
    started = time.perf_counter()
    await redis.ping()
    return (time.perf_counter() - started) * 1000
