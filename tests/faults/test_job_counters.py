"""Job counters under faults: workers SIGKILLed at random, and Redis restarted with AOF,
while jobs run, one is cancelled and chunks are retried and dead-lettered. At every look each
chunk is in exactly one state and nothing settles past the total; at the end every job has
settled to exactly its total, with one job.completed (or job.cancelled) each."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
import redis

from harness.redis_server import RedisServer
from tests.faults.handlers import COMPLETIONS_KEY
from tests.support.job_checks import check_counters, check_settled, job_event_counts, read_job
from tests.support.job_submission import submit_until_accepted
from tests.support.processes import service_env, start_worker

pytestmark = pytest.mark.slow

CHUNKS_PER_JOB = 200
DEADLINE_S = 240
HANDLER = "tests.faults.handlers:job_chunk_or_die"


def contents(job_index: int) -> list[str]:
    """One poison chunk per job (it kills three workers, then is dead-lettered), some flaky."""
    chooser = random.Random(job_index)
    texts = ["flaky" if chooser.random() < 0.05 else "ok" for _ in range(CHUNKS_PER_JOB)]
    texts[chooser.randrange(CHUNKS_PER_JOB)] = "poison"
    return texts


def submit(client: httpx.Client, job_id: str, texts: list[str]) -> None:
    """POST /jobs, retried with the same Idempotency-Key through any outage."""
    body = {
        "job_id": job_id,
        "chunks": [{"chunk_id": f"c{i}", "content": text} for i, text in enumerate(texts)],
    }
    submit_until_accepted(client, body)


def watch_until_finished(client: httpx.Client, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Check every job's counters over and over until all have finished; their last reads."""
    deadline = time.monotonic() + DEADLINE_S
    last: dict[str, dict[str, Any]] = {}
    while True:
        for job_id in job_ids:
            job = read_job(client, job_id)
            if job is not None:
                check_counters(job)
                last[job_id] = job
        if len(last) == len(job_ids) and all(
            job["state"] in ("done", "failed", "cancelled") for job in last.values()
        ):
            return last
        progress = {job_id: (job["state"], job["done"]) for job_id, job in last.items()}
        assert time.monotonic() < deadline, f"jobs not finished: {progress}"
        time.sleep(0.3)


def check_outcome(
    client: redis.Redis, last: dict[str, dict[str, Any]], cancelled: str | None
) -> None:
    events = job_event_counts(client)
    completions = client.hgetall(COMPLETIONS_KEY)
    for job_id, job in last.items():
        check_settled(job)
        if job_id == cancelled:
            assert job["state"] == "cancelled"
            assert events.get(f"job.cancelled {job_id}") == 1
            assert f"job.completed {job_id}" not in events
            continue
        assert (job["state"], job["failed"], job["done"]) == ("failed", 1, CHUNKS_PER_JOB - 1)
        assert events.get(f"job.completed {job_id}") == 1, events
        index = int(job_id.rsplit("-", 1)[1])
        for chunk, text in zip(job["chunks"], contents(index), strict=True):
            if text != "poison":
                assert f"{job_id}/{chunk['chunk_id']}" in completions


class WorkerKeeper:
    """Starts again any worker that died (a poison chunk kills its worker), and while
    `killing` is set SIGKILLs one at random every 0.3 to 1 s."""

    def __init__(self, workers: list[subprocess.Popen[str]], env: dict[str, str]) -> None:
        self.workers = workers
        self.env = env
        self.killing = threading.Event()
        self.kills = 0
        self._stop = threading.Event()
        self._chooser = random.Random(20261130)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WorkerKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._chooser.uniform(0.3, 1.0)):
            for index, worker in enumerate(self.workers):
                if worker.poll() is not None:
                    self.workers[index] = start_worker(self.env)
            if self.killing.is_set():
                victim = self._chooser.randrange(len(self.workers))
                self.workers[victim].send_signal(signal.SIGKILL)
                self.workers[victim].wait()
                self.kills += 1
                self.workers[victim] = start_worker(self.env)


def test_counters_hold_while_workers_are_killed(
    api: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: list[subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = service_env(redis_server.url, block_ms=200, claim_idle_ms=1000, task_handler=HANDLER)
    job_ids = [f"kill-{index}" for index in range(6)]
    with httpx.Client(base_url=api, timeout=10) as client:
        for index, job_id in enumerate(job_ids):
            submit(client, job_id, contents(index))
        workers.extend(start_worker(env) for _ in range(3))
        with WorkerKeeper(workers, env) as keeper:
            keeper.killing.set()
            time.sleep(1)
            assert client.delete("/jobs/kill-5").status_code == 202
            time.sleep(7)
            keeper.killing.clear()
            last = watch_until_finished(client, job_ids)
    check_outcome(redis_client, last, cancelled="kill-5")
    with capsys.disabled():
        print(f"\njob counters: {len(job_ids)} jobs, {keeper.kills} SIGKILLs, all consistent")


def test_counters_hold_across_redis_restarts(
    api: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: list[subprocess.Popen[str]],
) -> None:
    env = service_env(redis_server.url, block_ms=200, claim_idle_ms=1000, task_handler=HANDLER)
    job_ids = [f"restart-{index}" for index in range(4)]
    with httpx.Client(base_url=api, timeout=10) as client:
        for index, job_id in enumerate(job_ids):
            submit(client, job_id, contents(index))
        workers.extend(start_worker(env) for _ in range(2))
        with WorkerKeeper(workers, env):
            for _ in range(2):
                time.sleep(1.5)
                redis_server.restart(down_s=1.0)
            last = watch_until_finished(client, job_ids)
    check_outcome(redis.Redis(port=redis_server.port, decode_responses=True), last, None)
