"""POST /jobs with 1,000 chunks, against the same 1,000 chunks as POST /tasks calls.

One API process and a redis-server on this machine, no worker (only admission is measured),
the streams emptied and the jobs dropped before each run. POST /tasks is taken one call
after another over one kept-alive connection (what a simple client does) and from 32
concurrent connections; POST /jobs is one request. Each figure is the median of the runs.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.servers import http_app, redis_server
from service.core import names

CHUNKS = 1_000
RUNS = 5
QUICK_RUNS = 2
CONCURRENCY = 32
# A typical chunk of a document split for RAG: about 1 KB of text.
CONTENT = ("lorem ipsum dolor sit amet " * 40)[:1000]


def _empty(client: redis.Redis) -> None:
    """Empty the streams and drop the jobs, keeping the consumer groups the API made."""
    for stream in (names.INGESTION_STREAM, names.EVENTS_STREAM):
        client.xtrim(stream, maxlen=0)
    prefix = names.job_key_prefix(names.INGESTION_STREAM)
    for pattern in (f"{prefix}*", names.job_index_key(names.INGESTION_STREAM)):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)


def _chunks(run: int) -> list[dict[str, str]]:
    return [{"chunk_id": f"r{run}-c{index}", "content": CONTENT} for index in range(CHUNKS)]


async def _post_job(client: httpx.AsyncClient, run: int) -> float:
    started = time.perf_counter()
    reply = await client.post("/jobs", json={"job_id": f"bench-{run}", "chunks": _chunks(run)})
    elapsed = time.perf_counter() - started
    if reply.status_code != 201:
        raise RuntimeError(f"POST /jobs answered {reply.status_code}: {reply.text[:200]}")
    return elapsed


async def _post_tasks(client: httpx.AsyncClient, run: int, concurrency: int) -> float:
    pending = asyncio.Queue[dict[str, str]]()
    for chunk in _chunks(run):
        pending.put_nowait(chunk)

    async def poster() -> None:
        while not pending.empty():
            chunk = pending.get_nowait()
            reply = await client.post("/tasks", json={"job_id": f"bench-t{run}", **chunk})
            if reply.status_code != 201:
                raise RuntimeError(f"POST /tasks answered {reply.status_code}")

    started = time.perf_counter()
    await asyncio.gather(*(poster() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _measure(base_url: str, flush: redis.Redis, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"jobs": [], "tasks_1": [], f"tasks_{CONCURRENCY}": []}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        for run in range(runs):
            # In turns, so a load spike from the other work on the machine hits all three.
            _empty(flush)
            times["jobs"].append(await _post_job(client, run))
            _empty(flush)
            times["tasks_1"].append(await _post_tasks(client, run, 1))
            _empty(flush)
            times[f"tasks_{CONCURRENCY}"].append(await _post_tasks(client, run, CONCURRENCY))
    return times


def measure_jobs(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Seconds to admit CHUNKS chunks each way (medians), and the ratios."""
    runs = QUICK_RUNS if quick else RUNS
    with redis_server(workdir / "jobs-redis") as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        flush = redis.Redis(port=server.port)
        with http_app("service.main:app", url) as (base_url, _):
            times = asyncio.run(_measure(base_url, flush, runs))
    jobs_s = statistics.median(times["jobs"])
    rows = [
        {"request": f"POST /jobs, {CHUNKS:,} chunks", "seconds": jobs_s},
        {"request": f"{CHUNKS:,} × POST /tasks, one at a time", "seconds": 0.0, "key": "tasks_1"},
        {
            "request": f"{CHUNKS:,} × POST /tasks, {CONCURRENCY} connections",
            "seconds": 0.0,
            "key": f"tasks_{CONCURRENCY}",
        },
    ]
    for row in rows:
        key = row.pop("key", None)
        if key:
            row["seconds"] = statistics.median(times[str(key)])
    for row in rows:
        seconds = float(row["seconds"])
        row["seconds"] = round(seconds, 3)
        row["chunks_per_s"] = round(CHUNKS / seconds)
        row["times_post_jobs"] = round(seconds / jobs_s, 1)
    return {"chunks": CHUNKS, "runs": runs, "content_bytes": len(CONTENT), "rows": rows}
