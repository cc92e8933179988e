"""Backend consumers of the events stream: each group reads every event once and acks it."""

from __future__ import annotations

import redis

from service.core.consumer_groups import ensure_all_groups
from service.core.redis_client import create_redis
from service.core.settings import Settings
from service.events.bus import EventPublisher, GroupEventConsumer
from service.events.wire import Event


async def test_each_group_gets_every_event_and_acks(
    settings: Settings, redis_client: redis.Redis
) -> None:
    client = create_redis(settings)
    try:
        await ensure_all_groups(client, settings)
        publisher = EventPublisher(client, settings.stream_events, settings.stream_maxlen)
        published = [
            await publisher.publish(Event(type="query.completed", data={"n": n})) for n in range(15)
        ]
        for group in ("ag-ui-frontend", "dashboard-frontend"):
            first = GroupEventConsumer(client, settings.stream_events, group, "c1", 10, 100)
            second = GroupEventConsumer(client, settings.stream_events, group, "c2", 10, 100)
            seen = []
            for consumer in (first, second, first):
                batch = await consumer.read()
                seen += [entry_id for entry_id, _ in batch]
                assert all(event.type == "query.completed" for _, event in batch)
                assert await consumer.ack([entry_id for entry_id, _ in batch]) == len(batch)
            # Within a group the consumers share the work; every event is seen exactly once.
            assert sorted(seen) == sorted(published)
            assert redis_client.xpending(settings.stream_events, group)["pending"] == 0
        untouched = {row["name"]: row for row in redis_client.xinfo_groups(settings.stream_events)}
        assert untouched["power-ui-frontend"]["lag"] == 15
    finally:
        await client.aclose()
