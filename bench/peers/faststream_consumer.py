"""FastStream's Redis Streams subscriber as a peer: one consumer in a group, batches of 10."""

from __future__ import annotations

import asyncio
import os
import sys

from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub


def build(consumer: str) -> FastStream:
    broker = RedisBroker(os.environ["SHIELD_REDIS_URL"])
    source = StreamSub(
        os.environ.get("BENCH_STREAM", "bench:tasks"),
        group=os.environ.get("BENCH_GROUP", "bench"),
        consumer=consumer,
        batch=True,
        max_records=10,
        polling_interval=100,
    )

    @broker.subscriber(stream=source)
    async def handle(messages: list[object]) -> None:
        return None

    return FastStream(broker)


if __name__ == "__main__":
    asyncio.run(build(sys.argv[1]).run())
