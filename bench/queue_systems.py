"""The task queues the benchmark runs side by side: how each is filled, started and watched.

Every system is filled with the same 30,000 tasks (our task fields, 200 bytes of content)
through its own client before any worker starts, then timed from its first read to its last
ack as seen in Redis, by polling what that system keeps there:
- stream systems (ours, the raw loop, FastStream, taskiq-redis): the consumer group's
  entries-read and pending count;
- BullMQ: its wait and active lists (completed jobs are removed, as acked entries are);
- arq: its queue sorted set, which loses a job only when the job has finished.
Each reads 10 tasks at a time where it has such a setting, as our worker's batches are 10.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.peers import install, names
from harness.processes import REPO_ROOT, service_env
from service.core.consumer_groups import ensure_all_groups
from service.core.redis_client import create_redis
from service.core.settings import load_settings
from service.tasks.task_format import Task, task_fields
from service.tasks.task_queue import TaskQueue

FILL_TIMEOUT_S = 600
FILL_CHUNK = 1000


@dataclass(frozen=True)
class Progress:
    started: bool
    done: bool
    detail: str


@dataclass(frozen=True)
class QueueSystem:
    """One queue under test; `prepare` raises install.PeerUnavailable when it cannot run."""

    name: str
    version: str
    configuration: str
    # Fills the queue with N tasks, given a client and the environment of this system.
    fill: Callable[[redis.Redis, dict[str, str], int], None]
    command: Callable[[str], list[str]]
    progress: Callable[[redis.Redis, int], Progress]
    cwd: Path = REPO_ROOT
    prepare: Callable[[], None] = lambda: None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, redis_url: str) -> dict[str, str]:
        """What every process of this system sees: our SHIELD_* settings plus its own."""
        env = service_env(redis_url, block_ms=200, task_handler="bench.peers.noop_handler:noop")
        return {**env, "BENCH_REDIS_URL": redis_url, **self.extra_env}


# Stream systems: a consumer group on a stream, watched through XINFO GROUPS.


def fill_stream(stream: str, group: str) -> Callable[[redis.Redis, dict[str, str], int], None]:
    def fill(client: redis.Redis, env: dict[str, str], count: int) -> None:
        client.xgroup_create(stream, group, id="0", mkstream=True)
        pipeline = client.pipeline(transaction=False)
        for index in range(count):
            fields = task_fields(job_id="bench", chunk_id=f"c{index}", content="x" * 200)
            pipeline.xadd(stream, fields)  # type: ignore[arg-type]
            if index % FILL_CHUNK == FILL_CHUNK - 1:
                pipeline.execute()
        pipeline.execute()

    return fill


def group_progress(stream: str, group: str) -> Callable[[redis.Redis, int], Progress]:
    def progress(client: redis.Redis, tasks: int) -> Progress:
        for row in client.xinfo_groups(stream):
            if row["name"] in (group, group.encode()):
                read, pending = int(row["entries-read"] or 0), int(row["pending"])
                return Progress(read > 0, read >= tasks and pending == 0, f"{read=} {pending=}")
        return Progress(False, False, "no group yet")

    return progress


def stream_system(
    name: str, stream: str, group: str, module: list[str], configuration: str, version: str = ""
) -> QueueSystem:
    return QueueSystem(
        name=name,
        version=version,
        configuration=configuration,
        fill=fill_stream(stream, group),
        command=lambda consumer: [sys.executable, "-m", *module, consumer],
        progress=group_progress(stream, group),
        extra_env={"BENCH_STREAM": stream, "BENCH_GROUP": group},
    )


# Ten at once, as BullMQ's concurrency 10, taskiq's 10 async tasks and arq's max_jobs 10: the
# default of 8 would also cap each read at 8, since a worker reads only into free slots.
OURS_CONCURRENCY = 10
OURS = dataclasses.replace(
    stream_system(
        "ours",
        "shield:ingestion_queue",
        "lightrag-workers",
        ["service.worker", "--consumer"],
        "python -m service.worker, no-op handler, batches of 10,"
        f" SHIELD_WORKER_CONCURRENCY={OURS_CONCURRENCY}, block 200 ms; tasks added with XADD,"
        " so they belong to no job record and the scripts find none to count",
        version="this commit",
    ),
    extra_env={
        "BENCH_STREAM": "shield:ingestion_queue",
        "BENCH_GROUP": "lightrag-workers",
        "SHIELD_WORKER_CONCURRENCY": str(OURS_CONCURRENCY),
    },
)

# Jobs of this many chunks, admitted as POST /jobs admits them.
JOB_CHUNKS = 1000
# Room for the whole fill under the backlog cap, which admit enforces.
JOBS_STREAM_MAXLEN = 40_000


def fill_jobs(client: redis.Redis, env: dict[str, str], count: int) -> None:
    """Admit the tasks as jobs of JOB_CHUNKS chunks, through the queue's own admit script:
    every chunk then has a record that the worker's scripts move to running and done."""
    settings = load_settings(
        redis_url=env["SHIELD_REDIS_URL"], stream_maxlen=int(env["SHIELD_STREAM_MAXLEN"])
    )

    async def admit_all() -> None:
        redis_client = create_redis(settings)
        try:
            await ensure_all_groups(redis_client, settings)
            queue = TaskQueue(redis_client, settings)
            for first in range(0, count, JOB_CHUNKS):
                job_id = f"bench-{first // JOB_CHUNKS}"
                chunks = [
                    Task(job_id=job_id, chunk_id=f"c{index}", content="x" * 200)
                    for index in range(first, min(count, first + JOB_CHUNKS))
                ]
                await queue.admit(job_id, chunks, whole=True)
        finally:
            await redis_client.aclose()

    asyncio.run(admit_all())


OURS_JOBS = dataclasses.replace(
    OURS,
    name="ours, with jobs",
    configuration=f"as ours, but the tasks are admitted as jobs of {JOB_CHUNKS:,} chunks (the"
    " POST /jobs path), so each begin and ack also moves the chunk's record and its job's"
    f" counters; SHIELD_STREAM_MAXLEN={JOBS_STREAM_MAXLEN:,} so the whole fill is admitted",
    fill=fill_jobs,
    extra_env={**OURS.extra_env, "SHIELD_STREAM_MAXLEN": str(JOBS_STREAM_MAXLEN)},
)
RAW = stream_system(
    "raw redis-py",
    "bench:tasks",
    "bench",
    ["bench.peers.raw_consumer"],
    "XREADGROUP COUNT 10, one XACK per batch, nothing else (bench/peers/raw_consumer.py)",
)
FASTSTREAM = stream_system(
    "faststream",
    "bench:tasks",
    "bench",
    ["bench.peers.faststream_consumer"],
    "RedisBroker, StreamSub with a group, batch=True, max_records 10, polling 100 ms",
    version="0.7.8",
)


# Peers that run from their own install in the cache (bench/peers/install.py).


def _peer_fill(
    command: Callable[[int], list[str]], cwd: Callable[[], Path], what: str
) -> Callable[[redis.Redis, dict[str, str], int], None]:
    """A fill that runs the peer's own client in its own install (it knows its format)."""

    def fill(client: redis.Redis, env: dict[str, str], count: int) -> None:
        result = subprocess.run(
            command(count), cwd=cwd(), env=env, capture_output=True, text=True,
            timeout=FILL_TIMEOUT_S,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{what} fill failed: {result.stderr[-1000:]}")

    return fill


def _python_peer(peer: install.PythonPeer, *arguments: str) -> list[str]:
    return [str(peer.python), "-m", *arguments]


TASKIQ = QueueSystem(
    name="taskiq-redis",
    version=", ".join(install.TASKIQ.requirements),
    configuration="RedisStreamBroker (a stream and a group), xread_count 10, one XACK per task;"
    " worker: `taskiq worker --workers 1 --max-async-tasks 10`, no result backend",
    fill=_peer_fill(
        lambda count: _python_peer(install.TASKIQ, "bench.peers.taskiq_peer", "fill", str(count)),
        lambda: REPO_ROOT,
        "taskiq",
    ),
    command=lambda consumer: _python_peer(
        install.TASKIQ,
        "taskiq",
        "worker",
        "bench.peers.taskiq_peer:broker",
        "--workers",
        "1",
        "--max-async-tasks",
        "10",
        "--no-configure-logging",
    ),  # fmt: skip
    progress=group_progress(names.TASKIQ_STREAM, names.TASKIQ_GROUP),
    prepare=lambda: _require(install.TASKIQ.python, "taskiq-redis is not installed"),
)


def arq_progress(client: redis.Redis, tasks: int) -> Progress:
    """arq keeps a job in its queue until it finishes; a worker's first poll writes its
    health-check key, the nearest thing arq has to a first read."""
    queued = int(client.zcard(names.ARQ_QUEUE))
    polled = bool(client.exists(f"{names.ARQ_QUEUE}:health-check"))
    return Progress(polled or queued < tasks, queued == 0, f"{queued=}")


ARQ = QueueSystem(
    name="arq",
    version=", ".join(install.ARQ.requirements),
    configuration="one Worker per process, max_jobs 10, poll_delay 10 ms (default 0.5 s),"
    " keep_result 0; jobs enqueued with enqueue_job",
    fill=_peer_fill(
        lambda count: _python_peer(install.ARQ, "bench.peers.arq_peer", "fill", str(count)),
        lambda: REPO_ROOT,
        "arq",
    ),
    command=lambda consumer: _python_peer(install.ARQ, "bench.peers.arq_peer", "work"),
    progress=arq_progress,
    prepare=lambda: _require(install.ARQ.python, "arq is not installed"),
)


def bullmq_progress(client: redis.Redis, tasks: int) -> Progress:
    waiting = int(client.llen(f"bull:{names.BULLMQ_QUEUE}:wait"))
    active = int(client.llen(f"bull:{names.BULLMQ_QUEUE}:active"))
    return Progress(waiting < tasks or active > 0, waiting == 0 and active == 0, f"{waiting=}")


BULLMQ = QueueSystem(
    name="bullmq",
    version=", ".join(f"{name}=={pin}" for name, pin in install.bullmq_pins().items())
    + ", on the system's Node.js",
    configuration="one Worker per process, no-op async processor, concurrency 10,"
    " removeOnComplete; jobs added with addBulk",
    fill=_peer_fill(
        lambda count: ["node", "bullmq_peer.mjs", "fill", str(count)], install.bullmq_home, "bullmq"
    ),
    command=lambda consumer: ["node", "bullmq_peer.mjs", "work"],
    progress=bullmq_progress,
    cwd=install.bullmq_home(),
    extra_env={"BENCH_BULLMQ_QUEUE": names.BULLMQ_QUEUE},
    prepare=lambda: _require(
        install.copy_bullmq_files() / "node_modules" / "bullmq", "bullmq is not installed"
    ),
)


def _require(path: Path, reason: str) -> None:
    if not path.exists():
        raise install.PeerUnavailable(f"{reason} (run `python -m bench.peers.install`)")


BASELINES = (OURS, OURS_JOBS, RAW, FASTSTREAM)
PEERS = (BULLMQ, ARQ, TASKIQ)
