"""Creating the streams' consumer groups, idempotently."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from service.config import Settings


async def ensure_group(redis: Redis, stream: str, group: str, start_id: str = "$") -> bool:
    """XGROUP CREATE stream group <start_id> MKSTREAM; False when the group was already there."""
    try:
        await redis.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" in str(error):
            return False
        raise
    return True


def expected_groups(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each stream and the groups it must have."""
    return {
        settings.stream_ingestion: settings.ingestion_groups,
        settings.stream_events: settings.event_groups,
    }


async def ensure_all_groups(redis: Redis, settings: Settings) -> None:
    """Create both streams and all of their groups."""
    for stream, groups in expected_groups(settings).items():
        for group in groups:
            await ensure_group(redis, stream, group, worker_group_start(settings, group))


def worker_group_start(settings: Settings, group: str) -> str:
    """Where a group starts when the service has to create it.

    The worker group starts at the beginning, so tasks enqueued before any worker ran are
    not skipped; the others start at new entries, as the original design created them.
    """
    return "0" if group == settings.worker_group else "$"


def is_missing_group(error: RedisError) -> bool:
    """True for NOGROUP: the stream or its group is gone, as when Redis lost its data."""
    return isinstance(error, ResponseError) and str(error).startswith("NOGROUP")
