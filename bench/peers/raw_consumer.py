"""The raw redis-py baseline: XREADGROUP COUNT 10 then one XACK per batch, nothing else."""

from __future__ import annotations

import os
import sys

import redis


def main(consumer: str) -> None:
    client = redis.Redis.from_url(os.environ["SHIELD_REDIS_URL"], decode_responses=True)
    stream = os.environ.get("BENCH_STREAM", "bench:tasks")
    group = os.environ.get("BENCH_GROUP", "bench")
    while True:
        reply = client.xreadgroup(group, consumer, {stream: ">"}, count=10, block=1000)
        if reply:
            ids = [entry_id for entry_id, _ in reply[0][1]]
            client.xack(stream, group, *ids)


if __name__ == "__main__":
    main(sys.argv[1])
