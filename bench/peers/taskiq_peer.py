"""taskiq-redis as a queue peer, run with its own virtualenv.

`python -m bench.peers.taskiq_peer fill N` sends N tasks carrying our tasks' fields with
`.kiq()`; the worker is taskiq's own CLI, one process per worker as the harness starts them:
`python -m taskiq worker bench.peers.taskiq_peer:broker --workers 1 --max-async-tasks 10`.
The broker is taskiq-redis's RedisStreamBroker: a stream with a consumer group, read 10 at a
time (our batches are 10), each message acked after its task ran, no result backend.
"""

from __future__ import annotations

import asyncio
import os
import sys

from taskiq_redis import RedisStreamBroker

from bench.peers.names import TASKIQ_GROUP, TASKIQ_STREAM

CONTENT = "x" * 200
SEND_AT_ONCE = 200

# Read from the start of the stream: the harness fills it before any worker starts.
broker = RedisStreamBroker(
    url=os.environ["BENCH_REDIS_URL"],
    queue_name=TASKIQ_STREAM,
    consumer_group_name=TASKIQ_GROUP,
    consumer_id="0",
    xread_count=10,
)


@broker.task(task_name="noop")
async def noop(job_id: str, chunk_id: str, content: str) -> None:
    return None


async def fill(count: int) -> None:
    await broker.startup()
    for start in range(0, count, SEND_AT_ONCE):
        indexes = range(start, min(count, start + SEND_AT_ONCE))
        await asyncio.gather(*(noop.kiq("bench", f"c{index}", CONTENT) for index in indexes))
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(fill(int(sys.argv[2])))
