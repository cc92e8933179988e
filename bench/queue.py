"""Task throughput from enqueue through consume to ack, against a raw loop, peers, and Redis."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass

import redis

from bench.queue_systems import QueueSystem
from harness.processes import REPO_ROOT, terminate

POLL_S = 0.005
RUN_TIMEOUT_S = 300


@dataclass
class QueueResult:
    system: str
    workers: int
    tasks: int
    seconds: float
    tasks_per_s: float

    def row(self) -> dict[str, object]:
        return asdict(self)


def run_queue(system: QueueSystem, redis_url: str, workers: int, tasks: int) -> QueueResult:
    """Fill the queue, start the consumers, time first read to last ack."""
    system.prepare()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    env = system.env(redis_url)
    system.fill(client, env, tasks)
    processes = [
        subprocess.Popen(
            system.command(f"c{index}"),
            cwd=system.cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for index in range(workers)
    ]
    try:
        first = None
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            progress = system.progress(client, tasks)
            now = time.monotonic()
            if first is None and progress.started:
                first = now
            if progress.done:
                break
            time.sleep(POLL_S)
        else:
            raise RuntimeError(f"{system.name}: not done in time: {progress.detail}")
        seconds = max(now - (first if first is not None else now), 1e-6)
    finally:
        terminate(processes, groups=True)
        client.close()
    return QueueResult(system.name, workers, tasks, round(seconds, 3), round(tasks / seconds, 1))


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
