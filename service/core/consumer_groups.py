"""The consumer groups: which exist, where each starts, and creating them idempotently.

`group_plan` is the one list of (stream, group, start id). The service creates groups from it
at start, and the deployment's `redis-groups` step creates the same groups from the same list
before the service first runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from service.core.settings import Settings

FROM_THE_START = "0"
NEW_ENTRIES_ONLY = "$"


@dataclass(frozen=True)
class GroupSpec:
    """One consumer group on one stream, and the id it starts after when created."""

    stream: str
    group: str
    start_id: str


async def ensure_group(redis: Redis, stream: str, group: str, start_id: str = "$") -> bool:
    """XGROUP CREATE stream group <start_id> MKSTREAM; False when the group was already there."""
    try:
        await redis.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" in str(error):
            return False
        raise
    return True


def group_plan(settings: Settings) -> tuple[GroupSpec, ...]:
    """Every group on both streams, with where it starts."""
    return tuple(
        GroupSpec(
            stream,
            group,
            worker_group_start(settings, group)
            if stream == settings.stream_ingestion
            else NEW_ENTRIES_ONLY,
        )
        for stream, groups in expected_groups(settings).items()
        for group in groups
    )


def expected_groups(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each stream and the groups it must have."""
    return {
        settings.stream_ingestion: settings.ingestion_groups,
        settings.stream_events: settings.event_groups,
    }


async def ensure_all_groups(redis: Redis, settings: Settings) -> None:
    """Create both streams and all of their groups."""
    for spec in group_plan(settings):
        await ensure_group(redis, spec.stream, spec.group, spec.start_id)


def worker_group_start(settings: Settings, group: str) -> str:
    """Where a group starts when it is created.

    The worker group starts at the beginning, so tasks enqueued before any worker ran are
    not skipped; the others start at new entries, as the original design created them.
    """
    return FROM_THE_START if group == settings.worker_group else NEW_ENTRIES_ONLY


def is_missing_group(error: RedisError) -> bool:
    """True for NOGROUP: the stream or its group is gone, as when Redis lost its data."""
    return isinstance(error, ResponseError) and str(error).startswith("NOGROUP")
