"""Jobs under Sentinel: a retry after the replica check's 503 writes nothing twice, and the
job counters stay consistent through a failover (the primary SIGKILLed mid-job)."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import httpx
import pytest
import redis

from harness.waiting import wait_until
from service.core import names
from tests.faults.handlers import COMPLETIONS_KEY
from tests.support.job_checks import (
    FINISHED,
    check_counters,
    check_settled,
    job_event_counts,
    read_job,
)
from tests.support.job_submission import submit_until_accepted
from tests.support.live_server import serve
from tests.support.processes import service_env, start_worker
from tests.support.sentinel_cluster import Cluster
from tests.support.service_settings import make_settings

DEADLINE_S = 180


def caught_up(cluster: Cluster) -> bool:
    primary = redis.Redis(port=cluster.primary.port)
    replica = redis.Redis(port=cluster.replica.port)
    offset = primary.info("replication")["master_repl_offset"]
    return bool(replica.info("replication")["slave_repl_offset"] >= offset)


def test_a_retry_after_the_replica_checks_503_gives_one_task(
    cluster: Cluster, redis_client: redis.Redis
) -> None:
    settings = make_settings(
        cluster.primary,
        redis_sentinels=cluster.sentinel_setting,
        task_replicas=1,
        task_replica_timeout_ms=300,
    )
    primary = redis.Redis(port=cluster.primary.port, decode_responses=True)
    replica = cluster.replica.process
    assert replica is not None
    task = {"job_id": "once", "chunk_id": "c0", "content": "x"}
    job = {"job_id": "doc", "chunks": [{"chunk_id": f"c{i}", "content": "x"} for i in range(5)]}
    with serve(settings) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        for path, body, key, written in (("/tasks", task, "t-1", 1), ("/jobs", job, "j-1", 6)):
            replica.send_signal(signal.SIGSTOP)
            try:
                refused = client.post(path, json=body, headers={"Idempotency-Key": key})
            finally:
                replica.send_signal(signal.SIGCONT)
            assert refused.status_code == 503, refused.text
            assert "replica" in refused.json()["detail"]
            wait_until(lambda: caught_up(cluster), timeout_s=20)
            retried = client.post(path, json=body, headers={"Idempotency-Key": key})
            assert retried.status_code == 201, retried.text
            assert retried.headers["Idempotent-Replayed"] == "true"
            assert primary.xlen(names.INGESTION_STREAM) == written
        assert client.get("/jobs/once").json()["total"] == 1
        assert client.get("/jobs/doc").json()["total"] == 5


def submit(client: httpx.Client, job_id: str, chunks: int) -> None:
    body = {
        "job_id": job_id,
        "chunks": [{"chunk_id": f"{job_id}-c{i}", "content": "x"} for i in range(chunks)],
    }
    submit_until_accepted(client, body)


def finished_jobs(client: httpx.Client, job_ids: list[str]) -> list[dict[str, Any]]:
    """Every job as the API reads it, once all are readable and finished; else none."""
    readable = [read_job(client, job_id) for job_id in job_ids]
    jobs = [job for job in readable if job is not None]
    if len(jobs) < len(job_ids) or any(job["state"] not in FINISHED for job in jobs):
        return []
    return jobs


@pytest.mark.slow
def test_job_counters_hold_through_a_failover(
    cluster: Cluster,
    redis_client: redis.Redis,
    workers: list[subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    tally = redis_client  # the session's redis-server, which no failover touches
    tally.delete(COMPLETIONS_KEY)
    settings = make_settings(
        cluster.primary, redis_sentinels=cluster.sentinel_setting, task_replicas=1
    )
    env = service_env(
        cluster.primary.url,
        redis_sentinels=cluster.sentinel_setting,
        block_ms=200,
        claim_idle_ms=1000,
        task_handler="tests.faults.handlers:count_in_tally",
    )
    env["TALLY_REDIS_URL"] = f"redis://127.0.0.1:{tally.connection_pool.connection_kwargs['port']}"
    job_ids = [f"fo-{index}" for index in range(3)]
    chunks = 1_000
    with serve(settings) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        for job_id in job_ids:
            submit(client, job_id, chunks)
        workers.extend(start_worker(env) for _ in range(2))
        wait_until(lambda: tally.hlen(COMPLETIONS_KEY) >= chunks, timeout_s=60)
        restarter = cluster.kill_primary()
        deadline = time.monotonic() + DEADLINE_S
        last: dict[str, dict[str, Any]] = {}
        while not (
            len(last) == len(job_ids) and all(job["state"] == "done" for job in last.values())
        ):
            assert time.monotonic() < deadline, {k: v["done"] for k, v in last.items()}
            for job_id in job_ids:
                job = read_job(client, job_id)
                if job is not None:
                    check_counters(job)
                    last[job_id] = job
            time.sleep(0.5)
        restarter.join()
        # "done" above may have been read from the old primary, restarted ahead of the
        # failover, whose writes the failover then discards. What counts is the primary the
        # cluster settles on: its workers redo any chunk whose ack was lost, so every job ends
        # there, with its job.completed, exactly once.
        settled = redis.Redis(port=cluster.settled_primary(), decode_responses=True)
        completions = {f"job.completed {job_id}": 1 for job_id in job_ids}
        wait_until(
            lambda: completions.keys() <= job_event_counts(settled).keys(),
            timeout_s=DEADLINE_S,
            describe=lambda: f"job events on the settled primary: {job_event_counts(settled)}",
        )
        jobs = wait_until(lambda: finished_jobs(client, job_ids), timeout_s=60)
    for job in jobs:
        check_settled(job)
        assert job["done"] == chunks
    assert completions.items() <= job_event_counts(settled).items()
    assert tally.hlen(COMPLETIONS_KEY) == chunks * len(job_ids)
    with capsys.disabled():
        print(f"\njob failover: {len(job_ids)} jobs of {chunks}, primary killed, all settled")
