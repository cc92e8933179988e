"""Every group the service creates has a reader: the metrics-collector in its own process,
and the front-end groups following their applications' clients. Real API, worker and Redis."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import redis

from harness.redis_server import RedisServer
from service.core import names, redis_acl
from service.core.settings import Settings
from tests.service.handlers import HANDLED_KEY
from tests.support.live_server import http, serve, wait_for
from tests.support.processes import service_env, start_collector, start_worker, stop

QUEUE, EVENTS = "shield:ingestion_queue", "shield:events"


def group(client: redis.Redis, stream: str, name: str) -> dict[str, object]:
    [row] = [row for row in client.xinfo_groups(stream) if row["name"] == name]
    return row


def metrics_group_exists(client: redis.Redis, stream: str) -> bool:
    return any(row["name"] == "metrics-collector" for row in client.xinfo_groups(stream))


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


class StreamFollower:
    """A client of one application reading /events/stream in a thread, counting ids."""

    def __init__(self, base_url: str, app: str) -> None:
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base_url, app), daemon=True)
        self._thread.start()

    def _read(self, base_url: str, app: str) -> None:
        params = {"last_id": "0", "app": app}
        with httpx.stream("GET", f"{base_url}/events/stream", params=params, timeout=30) as reply:
            for line in reply.iter_lines():
                if line.startswith("id: ") and line != "id: 0":
                    self.ids.append(line[4:])
                if self._stop.is_set():
                    return

    def close(self) -> None:
        self._stop.set()


def test_the_metrics_collector_reads_both_streams_and_measures_what_only_it_can(
    settings: Settings, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    env = service_env(redis_server.url, block_ms=200, task_handler="tests.service.handlers:record")
    workers.append(start_worker(env))
    collector = start_collector(env)
    workers.append(collector)
    with serve(settings) as base_url, http(base_url) as client:
        for index in range(10):
            body = {"job_id": "job-m", "chunk_id": f"c{index}", "content": "x"}
            assert client.post("/tasks", json=body).status_code == 201
        wait_for(lambda: redis_client.llen(HANDLED_KEY) == 10)
        wait_for(
            lambda: (
                int(group(redis_client, EVENTS, "metrics-collector")["lag"] or 0) == 0
                and group(redis_client, EVENTS, "metrics-collector")["pending"] == 0
                and group(redis_client, QUEUE, "metrics-collector")["lag"] == 0
            ),
            timeout_s=15,
        )
        wait_for(
            lambda: metric(client.get("/metrics").text, "shield_task_latency_seconds_count") == 10,
            timeout_s=15,
        )
        text = client.get("/metrics").text
        assert metric(text, "shield_job_duration_seconds_count") == 1
        assert 'shield_collected_events_total{type="ingestion.completed"}' in text
        collected = client.get("/events/stats").json()["collected"]
    assert collected["task_latency"]["count"] == 10
    assert collected["job_duration"]["count"] == 1
    assert collected["events_by_type"]["ingestion.queued"] == 10
    # SIGTERM stops it between two batches, with a clean exit.
    assert stop(collector) == 0
    assert "stopped" in (collector.stdout.read() if collector.stdout else "")


def test_the_api_alone_reads_nothing_in_the_collectors_group(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The collector is its own process now: an API without it leaves the group's lag."""
    with serve(settings) as base_url, http(base_url) as client:
        for index in range(3):
            body = {"type": "test.note", "data": {"n": index}}
            assert client.post("/events", json=body).status_code == 201
        assert int(group(redis_client, EVENTS, "metrics-collector")["lag"] or 0) == 3
        assert group(redis_client, EVENTS, "metrics-collector")["consumers"] == 0


def test_the_collector_needs_nothing_beyond_the_api_users_rules(tmp_path: Path) -> None:
    """On a Redis whose default user is off, the collector as the API's ACL user (as infra
    deploys it) reads, records, closes a job and acks, and Redis refuses it nothing."""
    server = RedisServer(tmp_path, appendonly=False)
    server.start()
    admin = redis.Redis(port=server.port, decode_responses=True)
    rules = redis_acl.api_rules(redis_acl.StreamNames())
    admin.execute_command(*redis_acl.setuser_arguments(redis_acl.API_USER, rules, "api-secret"))
    admin.execute_command("ACL", "SETUSER", "admin", "on", ">admin-secret", "+@all", "~*", "&*")
    admin = redis.Redis(
        port=server.port, username="admin", password="admin-secret", decode_responses=True
    )
    admin.execute_command("ACL", "SETUSER", "default", "off")
    env = service_env(
        server.url, redis_username=redis_acl.API_USER, redis_password="api-secret", block_ms=200
    )
    collector = start_collector(env)
    try:
        wait_for(lambda: admin.exists(EVENTS) == 1, timeout_s=15)
        wait_for(lambda: metrics_group_exists(admin, EVENTS), timeout_s=15)

        task_id = admin.xadd(QUEUE, {"job_id": "j-acl", "chunk_id": "c1", "content": "x"})
        data = json.dumps({"message_ids": [task_id]})
        admin.xadd(EVENTS, {"type": "ingestion.completed", "job_id": "j-acl", "data": data})
        wait_for(lambda: admin.hget(names.JOB_DURATION_KEY, "count") == "1", timeout_s=15)
        assert admin.hget(names.TASK_LATENCY_KEY, "count") == "1"
        assert group(admin, EVENTS, "metrics-collector")["pending"] == 0
        assert group(admin, QUEUE, "metrics-collector")["pending"] == 0
        assert admin.execute_command("ACL", "LOG") == []
        assert stop(collector) == 0
    finally:
        if collector.poll() is None:
            collector.kill()
        server.stop()


def test_a_collector_with_a_bad_setting_exits_2_with_one_line(redis_server: RedisServer) -> None:
    env = service_env(redis_server.url, block_ms="soon")
    collector = start_collector(env)
    assert collector.wait(timeout=30) == 2
    output = collector.stdout.read() if collector.stdout else ""
    assert output.startswith("config error: ")
    assert "SHIELD_BLOCK_MS" in output
    assert len(output.strip().splitlines()) == 1


def test_a_front_end_group_follows_what_its_applications_clients_were_sent(
    settings: Settings, redis_client: redis.Redis
) -> None:
    with serve(settings) as base_url, http(base_url) as client:
        follower = StreamFollower(base_url, "power-ui-frontend")
        try:
            wait_for(lambda: client.get("/health/detailed").status_code == 200)
            ids = [
                client.post("/events", json={"type": "test.event"}).json()["id"] for _ in range(5)
            ]
            wait_for(lambda: follower.ids[-1:] == ids[-1:])
            wait_for(
                lambda: (
                    group(redis_client, EVENTS, "power-ui-frontend")["last-delivered-id"] == ids[-1]
                ),
                timeout_s=5,
            )
            assert group(redis_client, EVENTS, "power-ui-frontend")["lag"] == 0
            # No client of the other applications: their groups have not moved.
            assert group(redis_client, EVENTS, "ag-ui-frontend")["lag"] == 5
            stats = client.get("/events/stats").json()["streams"][EVENTS]["groups"]
            lags = {row["name"]: row["lag"] for row in stats}
            assert lags["power-ui-frontend"] == 0 and lags["dashboard-frontend"] == 5
        finally:
            follower.close()
        refused = client.get("/events/stream", params={"app": "metrics-collector"})
        assert refused.status_code == 400 and "app must be one of" in refused.json()["detail"]
