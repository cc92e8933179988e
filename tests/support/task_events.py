"""Reading what a worker did from Redis: the task events it wrote and whether it is done."""

from __future__ import annotations

import json

import redis

from service.core import names

QUEUE, GROUP = names.INGESTION_STREAM, names.WORKER_GROUP


def events_of_type(client: redis.Redis, event_type: str) -> list[dict[str, str]]:
    """The fields of every event of a type on the events stream, in order."""
    return [
        fields for _, fields in client.xrange(names.EVENTS_STREAM) if fields["type"] == event_type
    ]


def event_data(client: redis.Redis, event_type: str) -> list[dict[str, object]]:
    """The data of every event of a type on the events stream, in order."""
    return [json.loads(fields["data"]) for fields in events_of_type(client, event_type)]


def chunks_in_events(client: redis.Redis, event_type: str) -> list[str]:
    """Chunk ids named by the batch events of a type, in stream order."""
    return [
        str(chunk)
        for data in event_data(client, event_type)
        for chunk in data["chunk_ids"]  # type: ignore[attr-defined]
    ]


def completed_chunks(client: redis.Redis) -> list[str]:
    """Chunk ids named by ingestion.completed events, in stream order."""
    return chunks_in_events(client, "ingestion.completed")


def pending_count(client: redis.Redis) -> int:
    """Deliveries of the worker group not yet acked."""
    return int(client.xpending(QUEUE, GROUP)["pending"])


def settled(client: redis.Redis) -> bool:
    """Nothing pending under a worker and nothing waiting for a retry."""
    return pending_count(client) == 0 and client.zcard(names.delayed_key(QUEUE)) == 0
