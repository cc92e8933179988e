"""Scale-out measurements (`make bench-scale`): SSE fan-out with 2 API processes against 1,
Redis reads per event per process, and what WAIT 1 costs POST /tasks.

Everything runs on this machine: redis-server, the API processes and the clients share its
two cores, so a second API process competes with the clients for CPU. The numbers say what
a second process buys here; on a host with more cores it buys more.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.fanout import percentile, publish, read_commands
from bench.servers import http_app, redis_server
from harness.processes import REPO_ROOT

FANOUT_CELLS = ((200, 1000), (1000, 1000))
ENQUEUE_TASKS = 3000
ENQUEUE_CONCURRENCY = 32


def fanout_cell(
    redis_url: str, targets: list[str], subscribers: int, rate_per_s: int, duration_s: float
) -> dict[str, Any]:
    """N SSE subscribers split evenly over the API processes, one client process each."""
    share = subscribers // len(targets)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.subscribers", "sse", target, str(share)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for target in targets
    ]
    for process in processes:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("subscribers did not connect")
    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    published = publish(client, rate_per_s, duration_s)
    time.sleep(2.0)
    reads = read_commands(client)
    client.close()
    deliveries, latencies = 0, []
    for process in processes:
        output, _ = process.communicate("", timeout=120)
        result = json.loads(output.strip().splitlines()[-1])
        deliveries += result["deliveries"]
        latencies.extend(result["latencies_us"])
    latencies.sort()
    expected = published * share * len(targets)
    return {
        "api_processes": len(targets),
        "subscribers": share * len(targets),
        "rate_per_s": rate_per_s,
        "published": published,
        "completeness": round(deliveries / expected, 4) if expected else 0.0,
        "deliveries_per_s": round(deliveries / duration_s, 1),
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "redis_reads_per_event": round(reads / published, 3) if published else 0.0,
        "redis_reads_per_event_per_process": round(reads / published / len(targets), 3)
        if published
        else 0.0,
    }


def measure_fanout(workdir: Path, duration_s: float) -> list[dict[str, Any]]:
    rows = []
    with redis_server(workdir / "fanout-redis") as server:
        for subscribers, rate in FANOUT_CELLS:
            for processes in (1, 2):
                with ExitStack() as stack:
                    targets = [
                        stack.enter_context(http_app("service.main:app", server.url))[0]
                        for _ in range(processes)
                    ]
                    rows.append(fanout_cell(server.url, targets, subscribers, rate, duration_s))
                    print(f"bench-scale: fan-out {rows[-1]}", file=sys.stderr)
    return rows


async def _enqueue(base_url: str, tasks: int, concurrency: int) -> tuple[float, int]:
    """POST tasks from concurrent clients; seconds taken and 503s (retried)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(tasks):
        queue.put_nowait(index)
    refused = 0

    async def poster(client: httpx.AsyncClient) -> None:
        nonlocal refused
        while not queue.empty():
            index = queue.get_nowait()
            while True:
                reply = await client.post(
                    "/tasks", json={"job_id": "bench", "chunk_id": f"c{index}", "content": "x"}
                )
                if reply.status_code == 201:
                    break
                refused += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(poster(client) for _ in range(concurrency)))
        return time.perf_counter() - started, refused


def measure_wait(workdir: Path, tasks: int) -> list[dict[str, Any]]:
    """POST /tasks throughput against a primary with one replica, with and without WAIT 1."""
    rows = []
    with ExitStack() as stack:
        primary = stack.enter_context(redis_server(workdir / "primary"))
        replicaof = ["--replicaof", "127.0.0.1", str(primary.port)]
        stack.enter_context(redis_server(workdir / "replica", replicaof))
        watcher = redis.Redis(port=primary.port, decode_responses=True)
        deadline = time.monotonic() + 20
        while watcher.info("replication")["connected_slaves"] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not connect")
            time.sleep(0.1)
        for replicas in (0, 1, 0, 1):
            watcher.flushall()
            with http_app(
                "service.main:app", primary.url, task_replicas=replicas, stream_maxlen=1_000_000
            ) as (base_url, _):
                seconds, refused = asyncio.run(_enqueue(base_url, tasks, ENQUEUE_CONCURRENCY))
            rows.append(
                {
                    "task_replicas": replicas,
                    "tasks": tasks,
                    "concurrency": ENQUEUE_CONCURRENCY,
                    "seconds": round(seconds, 2),
                    "tasks_per_s": round(tasks / seconds, 1),
                    "refused": refused,
                }
            )
            print(f"bench-scale: enqueue {rows[-1]}", file=sys.stderr)
    return rows


def measure_scale(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Both measurements, for results.json's `scale` section."""
    return {
        "fanout": measure_fanout(workdir, 2.0 if quick else 5.0),
        "enqueue": measure_wait(workdir, 500 if quick else ENQUEUE_TASKS),
    }
