"""Task throughput from enqueue through consume to ack, against a raw loop, a peer, and Redis."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import redis

from bench.processes import REPO_ROOT, service_env, terminate
from service.tasks import task_fields

OURS = ("shield:ingestion_queue", "lightrag-workers")
PEERS = ("bench:tasks", "bench")


@dataclass
class QueueResult:
    system: str
    workers: int
    tasks: int
    seconds: float
    tasks_per_s: float

    def row(self) -> dict[str, object]:
        return asdict(self)


def fill(client: redis.Redis, stream: str, group: str, count: int) -> None:
    client.delete(stream)
    client.xgroup_create(stream, group, id="0", mkstream=True)
    pipeline = client.pipeline(transaction=False)
    for index in range(count):
        pipeline.xadd(stream, task_fields(job_id="bench", chunk_id=f"c{index}", content="x" * 200))
        if index % 1000 == 999:
            pipeline.execute()
    pipeline.execute()


def _group(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    for row in client.xinfo_groups(stream):
        if row["name"] in (group, group.encode()):
            return {"read": int(row["entries-read"] or 0), "pending": int(row["pending"])}
    return {"read": 0, "pending": 0}


def consumer_command(system: str, consumer: str) -> list[str]:
    if system == "ours":
        return [sys.executable, "-m", "service.worker", "--consumer", consumer]
    if system == "raw redis-py":
        return [sys.executable, "-m", "bench.peers.raw_consumer", consumer]
    return [sys.executable, "-m", "bench.peers.faststream_consumer", consumer]


def run_queue(system: str, redis_url: str, workers: int, tasks: int) -> QueueResult:
    """Fill the stream, start the consumers, time first read to last ack."""
    stream, group = OURS if system == "ours" else PEERS
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    fill(client, stream, group, tasks)
    env = service_env(
        redis_url,
        block_ms=200,
        task_handler="bench.peers.noop_handler:noop",
    )
    env.update({"BENCH_STREAM": stream, "BENCH_GROUP": group})
    processes = [
        subprocess.Popen(
            consumer_command(system, f"c{index}"),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for index in range(workers)
    ]
    try:
        first = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state = _group(client, stream, group)
            now = time.monotonic()
            if first is None and state["read"] > 0:
                first = now
            if state["read"] >= tasks and state["pending"] == 0:
                break
            time.sleep(0.005)
        else:
            raise RuntimeError(f"{system}: not done in time: {_group(client, stream, group)}")
        assert first is not None
        seconds = max(now - first, 1e-6)
    finally:
        terminate(processes)
        client.close()
    return QueueResult(system, workers, tasks, round(seconds, 3), round(tasks / seconds, 1))


def median_run(runs: list[QueueResult]) -> QueueResult:
    """The run with the median rate (the lower middle one of an even count)."""
    return sorted(runs, key=lambda run: run.tasks_per_s)[(len(runs) - 1) // 2]


XADD_RATE = re.compile(r"([\d.]+) requests per second")


def redis_benchmark_xadd(port: int, pipeline: int, requests: int = 200_000) -> float:
    """redis-benchmark's XADD rate: the physical limit of this Redis on this machine."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark is missing: install redis-tools")
    result = subprocess.run(
        [binary, "-p", str(port), "-n", str(requests), "-P", str(pipeline), "-q",
         "XADD", "bench:rb", "MAXLEN", "~", "100000", "*", "field", "value"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )  # fmt: skip
    match = XADD_RATE.search(result.stdout.replace("\r", "\n"))
    if match is None:
        raise RuntimeError(f"cannot read redis-benchmark output: {result.stdout[-500:]}")
    return float(match.group(1))
