"""arq as a queue peer, run with its own virtualenv: `python -m bench.peers.arq_peer fill N | work`.

fill enqueues N jobs carrying our tasks' fields through arq's own `enqueue_job`. work runs
one arq Worker with a no-op coroutine until SIGTERM, configured as the report says:
max_jobs 10 (our batches are 10), no result kept (we keep none either), and poll_delay
10 ms. arq has no blocking read: it polls its sorted set, by default every 0.5 s for at most
100 jobs, which alone would cap a worker near 200 jobs/s; 10 ms measures arq, not its nap.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

from bench.peers.names import ARQ_QUEUE

CONTENT = "x" * 200
ENQUEUE_AT_ONCE = 200
MAX_JOBS = 10
POLL_DELAY_S = 0.01


async def noop(ctx: dict[str, Any], job_id: str, chunk_id: str, content: str) -> None:
    return None


def redis_settings() -> RedisSettings:
    return RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])


async def fill(count: int) -> None:
    pool = await create_pool(redis_settings(), default_queue_name=ARQ_QUEUE)
    for start in range(0, count, ENQUEUE_AT_ONCE):
        indexes = range(start, min(count, start + ENQUEUE_AT_ONCE))
        await asyncio.gather(
            *(pool.enqueue_job("noop", "bench", f"c{index}", CONTENT) for index in indexes)
        )
    await pool.aclose()


def work() -> None:
    worker = Worker(
        functions=[noop],
        queue_name=ARQ_QUEUE,
        redis_settings=redis_settings(),
        max_jobs=MAX_JOBS,
        poll_delay=POLL_DELAY_S,
        keep_result=0,
    )
    worker.run()


if __name__ == "__main__":
    if sys.argv[1] == "fill":
        asyncio.run(fill(int(sys.argv[2])))
    else:
        work()
