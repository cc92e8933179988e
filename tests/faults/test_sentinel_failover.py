"""A Sentinel failover under load: the primary's redis-server is SIGKILLed while tasks arrive.

A primary, a replica and three sentinels on loopback; the API and two workers find the primary
through the sentinels. Every task that got a 201 was on a replica first (WAIT 1), so the
promoted replica has it and a worker completes it. Refusals (503) are retried by the client.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from harness.ports import free_port
from harness.processes import terminate
from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tests.faults.handlers import COMPLETIONS_KEY
from tests.support.live_server import http, serve
from tests.support.processes import service_env, start_api, start_worker
from tests.support.sentinel_cluster import Cluster
from tests.support.service_settings import make_settings

TASKS = 5_000
DEADLINE_S = 120


@pytest.mark.slow
def test_no_accepted_task_is_lost_when_the_primary_dies(
    cluster: Cluster,
    redis_client: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tally = redis_client  # the session's redis-server, which no failover touches
    env = service_env(
        f"redis://127.0.0.1:{cluster.primary.port}/0",
        redis_sentinels=cluster.sentinel_setting,
        task_replicas=1,
        block_ms=200,
        claim_idle_ms=1000,
        task_handler="tests.faults.handlers:count_in_tally",
    )
    env["TALLY_REDIS_URL"] = f"redis://127.0.0.1:{tally.connection_pool.connection_kwargs['port']}"
    port = free_port()
    log_path = tmp_path / "processes.log"
    log = log_path.open("w")
    processes = [start_api(env, port, log), start_worker(env, log=log), start_worker(env, log=log)]
    kill_at = random.randrange(TASKS // 5, TASKS * 4 // 5)
    accepted: list[str] = []
    refused = 0
    restarter: threading.Thread | None = None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_until(lambda: _answers(client), timeout_s=60)
            deadline = time.monotonic() + DEADLINE_S
            for index in range(TASKS):
                if index == kill_at:
                    restarter = cluster.kill_primary()
                chunk = f"c{index}"
                while not _post(client, chunk):
                    refused += 1
                    assert time.monotonic() < deadline, "the API never came back"
                    time.sleep(0.05)
                accepted.append(chunk)
        assert restarter is not None
        restarter.join()
        try:
            wait_until(lambda: tally.hlen(COMPLETIONS_KEY) >= len(accepted), timeout_s=DEADLINE_S)
        except TimeoutError:
            pass
        completions = {chunk: int(count) for chunk, count in tally.hgetall(COMPLETIONS_KEY).items()}
        missing = [chunk for chunk in accepted if chunk not in completions]
        assert missing == [], _whereabouts(cluster, missing) + log_path.read_text()[-3000:]
        # Settled: the replica promoted, and the old primary its replica again.
        assert cluster.settled_primary() == cluster.replica.port
        duplicates = sum(count - 1 for count in completions.values())
        with capsys.disabled():
            print(
                f"\nsentinel failover: {TASKS} tasks, primary killed at task {kill_at}, "
                f"{refused} refused and retried, {duplicates} duplicate completions, 0 lost"
            )
    finally:
        terminate(processes)
        log.close()


def _whereabouts(cluster: Cluster, chunks: list[str]) -> str:
    """Where the missing tasks are on the current primary, for the failure message."""
    primary = redis.Redis(port=cluster.sentinels[0].master_port(), decode_responses=True)
    found = [
        (entry_id, fields["chunk_id"])
        for entry_id, fields in primary.xrange("shield:ingestion_queue")
        if fields.get("chunk_id") in chunks
    ]
    pending = primary.xpending_range("shield:ingestion_queue", "lightrag-workers", "-", "+", 50)
    groups = primary.xinfo_groups("shield:ingestion_queue")
    dead = primary.xlen("shield:ingestion_queue:dlq")
    return f"in stream: {found}\npending: {pending}\ngroups: {groups}\ndlq: {dead}\n"


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def _post(client: httpx.Client, chunk: str) -> bool:
    """True on 201; False on 503 or a dropped connection, which the client retries."""
    try:
        reply = client.post(
            "/tasks", json={"job_id": "failover", "chunk_id": chunk, "content": "x"}
        )
    except httpx.TransportError:
        return False
    assert reply.status_code in (201, 503), reply.text
    return reply.status_code == 201


def test_a_task_no_replica_confirmed_is_not_called_accepted(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_server, task_replicas=1, task_replica_timeout_ms=100)
    with serve(settings) as base_url, http(base_url) as client:
        reply = client.post("/tasks", json={"job_id": "j", "chunk_id": "c", "content": "x"})
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "2"
    assert "reached 0 of 1 replica(s)" in reply.json()["detail"]
