"""shield_client, the original design's Python API, interleaved with the service's own worker
and API on a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from harness.ports import free_port
from harness.redis_server import RedisServer
from service.core.settings import Settings
from shield_client import RedisStreamsClient, ServiceGroup, Worker
from tests.service.handlers import FAIL_MARK, HANDLED_KEY
from tests.support.live_server import http, serve, wait_for
from tests.support.processes import REPO_ROOT, service_env, start_worker
from tests.support.service_settings import make_settings

QUEUE, GROUP = "shield:ingestion_queue", "lightrag-workers"
EVENTS, COLLECTOR = "shield:events", "metrics-collector"


@pytest.fixture
def client_settings(redis_server: RedisServer, redis_client: redis.Redis) -> Settings:
    return make_settings(redis_server, retry_backoff_ms=50)


def service_worker(redis_server: RedisServer, handler: str = "record") -> subprocess.Popen[str]:
    env = service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        task_handler=f"tests.service.handlers:{handler}",
    )
    return start_worker(env, consumer="service-worker")


async def test_a_task_added_by_the_client_is_run_by_the_service_worker(
    client_settings: Settings, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    async with RedisStreamsClient("client", client_settings) as client:
        entry_id = await client.add_task("job-1", "c1", "text", metadata={"lang": "en"})
        assert await client.get_queue_depth() == 1
    assert redis_client.xrange(QUEUE)[0][0] == entry_id
    workers.append(service_worker(redis_server))
    wait_for(lambda: redis_client.lrange(HANDLED_KEY, 0, -1) == ["c1"])


async def test_a_held_task_is_not_reclaimed_while_the_client_holds_it_and_its_ack_counts(
    client_settings: Settings, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    with serve(client_settings) as base_url, http(base_url) as api:
        assert (
            api.post("/tasks", json={"job_id": "j", "chunk_id": "held", "content": "x"}).status_code
            == 201
        )
    async with RedisStreamsClient("client", client_settings) as client:
        [task] = await client.read_tasks(count=1)
        assert task["chunk_id"] == "held" and task["metadata"] == {}
        # A service worker reclaims what is idle for 400 ms; the client's lease keeps it.
        workers.append(service_worker(redis_server))
        await asyncio.sleep(1.5)
        assert redis_client.llen(HANDLED_KEY) == 0
        [pending] = redis_client.xpending_range(QUEUE, GROUP, "-", "+", 10)
        assert pending["consumer"] == "client"
        assert await client.ack_task(task["message_id"])
        assert not await client.ack_task(task["message_id"])
    assert redis_client.xpending(QUEUE, GROUP)["pending"] == 0
    assert redis_client.hget("shield:ingestion_queue:counters", "acked") == "1"


async def test_a_task_the_client_let_go_of_is_reclaimed_by_the_service_worker(
    client_settings: Settings, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    async with RedisStreamsClient("client", client_settings) as client:
        await client.add_task("j", "dropped", "x")
        [task] = await client.read_tasks(count=1)
    # Closed without an ack: no more renewals, so another worker takes it.
    workers.append(service_worker(redis_server))
    wait_for(lambda: redis_client.lrange(HANDLED_KEY, 0, -1) == ["dropped"], timeout_s=15)
    async with RedisStreamsClient("client", client_settings) as again:
        assert not await again.ack_task(task["message_id"])


async def test_events_are_emitted_read_replayed_and_acked_in_a_group(
    client_settings: Settings, redis_client: redis.Redis
) -> None:
    async with RedisStreamsClient("observer", client_settings) as client:
        # The caller's own group, made on first use at the stream's end.
        assert await client.read_events("observer-group", block_ms=0) == []
        ids = [await client.emit_event("test.event", {"n": n}, job_id="j") for n in range(3)]
        read = await client.read_events("observer-group", count=10, block_ms=100)
        assert [entry_id for entry_id, _ in read] == ids
        assert [event["data"] for _, event in read] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert read[0][1]["type"] == "test.event" and read[0][1]["job_id"] == "j"
        # Unacked, they are this consumer's history: a replay from 0 gives them again.
        replayed = await client.read_events("observer-group", last_id="0")
        assert [entry_id for entry_id, _ in replayed] == ids
        assert await client.ack_event(ids[0], "observer-group") == 1
        replayed = await client.read_events("observer-group", last_id="0")
        assert [entry_id for entry_id, _ in replayed] == ids[1:]
    # The service's own groups saw none of it taken from them.
    collector = [row for row in redis_client.xinfo_groups(EVENTS) if row["name"] == COLLECTOR]
    assert collector[0]["pending"] == 0 and collector[0]["last-delivered-id"] == "0-0"


async def test_the_groups_the_service_reads_are_refused_by_name(
    client_settings: Settings, redis_client: redis.Redis
) -> None:
    async with RedisStreamsClient("observer", client_settings) as client:
        await client.emit_event("test.event")
        for group in (COLLECTOR, "ag-ui-frontend", "power-ui-frontend", "dashboard-frontend"):
            with pytest.raises(ServiceGroup, match=f"group '{group}' is read by the service"):
                await client.read_events(group, block_ms=0)
            with pytest.raises(ServiceGroup):
                await client.ack_event("0-1", group)
    assert all(row["pending"] == 0 for row in redis_client.xinfo_groups(EVENTS))


async def test_the_health_check_reads_what_the_service_reports(client_settings: Settings) -> None:
    async with RedisStreamsClient("observer", client_settings) as client:
        health = await client.check_redis_health()
    assert health["status"] == "up"
    assert set(health["streams"]) == {QUEUE, "shield:events"}


async def test_the_health_check_answers_down_when_redis_is_down(
    client_settings: Settings,
) -> None:
    # A port nothing listens on: the API's /health/detailed answers down there, not a 500.
    nowhere = client_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    client = RedisStreamsClient("observer", nowhere)
    try:
        health = await client.check_redis_health()
    finally:
        await client.close()
    assert health["status"] == "down"
    assert "Connection refused" in health["error"] or "connecting" in health["error"]


def job_of(api: httpx.Client, job_id: str) -> dict[str, Any]:
    reply = api.get(f"/jobs/{job_id}")
    assert reply.status_code == 200, reply.text
    job: dict[str, Any] = reply.json()
    return job


async def test_a_task_read_by_the_client_counts_running_in_its_job(
    client_settings: Settings, redis_client: redis.Redis
) -> None:
    chunks = [{"chunk_id": f"c{n}", "content": "x"} for n in range(2)]
    with serve(client_settings) as base_url, http(base_url) as api:
        assert api.post("/jobs", json={"job_id": "jc", "chunks": chunks}).status_code == 201
        async with RedisStreamsClient("client", client_settings) as client:
            [task] = await client.read_tasks(count=1, block_ms=0)
            job = job_of(api, "jc")
            assert (job["state"], job["running"], job["queued"]) == ("running", 1, 1)
            [chunk] = [chunk for chunk in job["chunks"] if chunk["chunk_id"] == task["chunk_id"]]
            assert chunk["state"] == "running"
            assert await client.ack_task(task["message_id"])
            job = job_of(api, "jc")
            assert (job["running"], job["done"], job["queued"]) == (0, 1, 1)


async def test_a_blocking_read_begins_what_arrives_while_it_waits(
    client_settings: Settings, redis_client: redis.Redis
) -> None:
    with serve(client_settings) as base_url, http(base_url) as api:
        async with RedisStreamsClient("client", client_settings) as client:
            reading = asyncio.create_task(client.read_tasks(block_ms=10_000))
            await asyncio.sleep(0.3)
            job = {"job_id": "late", "chunks": [{"chunk_id": "c0", "content": "x"}]}
            posted = await asyncio.to_thread(api.post, "/jobs", json=job)
            assert posted.status_code == 201
            [task] = await asyncio.wait_for(reading, 5)
            assert task["chunk_id"] == "c0"
            job_state = await asyncio.to_thread(job_of, api, "late")
            assert (job_state["state"], job_state["running"]) == ("running", 1)


async def test_the_chunks_of_a_cancelled_job_are_acked_as_cancelled_not_handed_out(
    client_settings: Settings, redis_client: redis.Redis
) -> None:
    chunks = [{"chunk_id": f"c{n}", "content": "x"} for n in range(3)]
    with serve(client_settings) as base_url, http(base_url) as api:
        assert api.post("/jobs", json={"job_id": "gone", "chunks": chunks}).status_code == 201
        assert api.post("/tasks", json={"job_id": "kept", "chunk_id": "k", "content": "x"})
        assert api.delete("/jobs/gone").status_code == 202
        async with RedisStreamsClient("client", client_settings) as client:
            tasks = await client.read_tasks(count=10, block_ms=0)
            assert [task["chunk_id"] for task in tasks] == ["k"]
            job = job_of(api, "gone")
            assert (job["state"], job["cancelled"], job["running"]) == ("cancelled", 3, 0)
            assert await client.ack_task(tasks[0]["message_id"])
    # Nothing of the cancelled job is left pending for anyone.
    assert redis_client.xpending(QUEUE, GROUP)["pending"] == 0


async def test_a_short_block_returns_soon_on_an_empty_stream(client_settings: Settings) -> None:
    slow = client_settings.model_copy(update={"block_ms": 5000})
    async with RedisStreamsClient("client", slow) as client:
        started = time.monotonic()
        assert await client.read_tasks(block_ms=200) == []
        waited_s = time.monotonic() - started
        assert 0.15 <= waited_s < 1.5, waited_s
        started = time.monotonic()
        assert await client.read_tasks(block_ms=0) == []
        assert time.monotonic() - started < 0.5
        with pytest.raises(ValueError, match="block_ms must be 0 or more"):
            await client.read_tasks(block_ms=-1)


async def test_an_external_worker_shares_the_group_with_the_service_worker(
    client_settings: Settings, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    handled_here: list[str] = []

    async def handle(task: Mapping[str, Any]) -> None:
        await asyncio.sleep(0.01)
        if FAIL_MARK in task["content"]:
            raise RuntimeError("cannot take this one")
        handled_here.append(task["chunk_id"])

    async with RedisStreamsClient("producer", client_settings) as client:
        for index in range(40):
            await client.add_task("j", f"c{index}", "x")
        # Both workers fail it, whichever gets it: three attempts, then the dead letters.
        await client.add_task("j", "bad", FAIL_MARK)
    external = Worker(handle, consumer="external", settings=client_settings)
    running = asyncio.create_task(external.run())
    workers.append(service_worker(redis_server, "fail_marked"))
    try:
        deadline = time.monotonic() + 20
        while len(handled_here) + redis_client.llen(HANDLED_KEY) < 40 or not redis_client.xlen(
            "shield:ingestion_queue:dlq"
        ):
            assert time.monotonic() < deadline, (handled_here, redis_client.llen(HANDLED_KEY))
            await asyncio.sleep(0.1)
    finally:
        external.stop()
        await asyncio.wait_for(running, 15)
    everything = handled_here + [chunk for chunk in redis_client.lrange(HANDLED_KEY, 0, -1)]
    assert sorted(everything) == sorted(f"c{index}" for index in range(40))
    [(_, letter)] = redis_client.xrange("shield:ingestion_queue:dlq")
    assert letter["chunk_id"] == "bad" and letter["dlq_attempts"] == "3"


# Run by the venv's own interpreter, away from the checkout: the installed copy, its Lua
# scripts loaded from the installed package, against the test's redis-server.
INSTALLED_PROBE = """
import asyncio, json, sys
import service.tasks, shield_client
from shield_client import RedisStreamsClient

async def main():
    async with RedisStreamsClient("pip-probe", redis_url=sys.argv[1]) as client:
        entry_id = await client.add_task("pip-job", "c0", "x")
        health = await client.check_redis_health()
        return entry_id, health["status"], await client.get_queue_depth()

entry_id, status, depth = asyncio.run(main())
print(json.dumps({"file": shield_client.__file__, "lua_from": service.tasks.__file__,
                  "entry_id": entry_id, "status": status, "depth": depth}))
"""


def test_pip_installs_the_package_into_a_fresh_venv_where_it_runs(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    # A copy of what the package is built from: building in the checkout would leave build/
    # and *.egg-info behind.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("service", "shield_client"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    # Offline: the dependencies (and setuptools, to build) come from the test venv, after the
    # new venv's own site-packages, so the installed shield_client is the one imported.
    [site_packages] = (venv / "lib").glob("python3*/site-packages")
    (site_packages / "test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install"]
    pip += ["--no-index", "--no-deps", "--no-build-isolation", "--quiet", str(source)]
    subprocess.run(pip, check=True, timeout=120)

    shutil.rmtree(source)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = subprocess.run(
        [venv / "bin/python", "-c", INSTALLED_PROBE, redis_server.url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)
    assert result["file"].startswith(str(site_packages)), result
    assert result["lua_from"].startswith(str(site_packages)), result
    assert (result["status"], result["depth"]) == ("up", 1)
    assert redis_client.xrange(QUEUE)[0][0] == result["entry_id"]


def test_the_package_ships_the_lua_scripts_and_the_dashboard() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    data = project["tool"]["setuptools"]["package-data"]
    lua = sorted(Path(REPO_ROOT / "service/tasks").glob(data["service.tasks"][0]))
    assert [path.name for path in lua] == sorted(
        path.name for path in (REPO_ROOT / "service/tasks/lua").glob("*.lua")
    ) and lua
    assert "shield_client*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
