"""The program's deployment carried out on the lab's real hosts: SSH, systemd, Redis.

The tests run in file order and share one deployment: deploy, check it as the original
plan's manual tests did, re-plan with no change, redeploy a code change under a live SSE
client, survive a SIGKILL, destroy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from service import names
from tests.infra.support import ProgramRun, run_program
from tests.lab import replay
from tests.lab.hosts import ORCHESTRATOR, REDIS_HOST, Lab
from tests.support.clients import follow_sse

REPO_ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "lab-token-for-tests"
BASE_URL = f"http://{ORCHESTRATOR}:8000"
UNITS = ("shield-orchestrator.service", "shield-orchestrator-worker.service")
GROUPS = {
    names.INGESTION_STREAM: list(names.INGESTION_GROUPS),
    names.EVENTS_STREAM: list(names.EVENT_GROUPS),
}


class Deployment:
    """The lab deployment the tests of this file share."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.source_root = workdir / "src"
        self.build_dir = workdir / "build"
        shutil.copytree(
            REPO_ROOT / "service",
            self.source_root / "service",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        self.config = {
            "orchestratorHost": ORCHESTRATOR,
            "redisHost": REDIS_HOST,
            "serviceBindAddress": ORCHESTRATOR,
            "orchestratorHostKey": lab.orchestrator_host_key,
            "redisHostKey": lab.redis_host_key,
            "healthTimeoutSeconds": "60",
        }
        self.secrets = {
            "sshPrivateKey": lab.ssh_key.read_text(),
            "redisPassword": lab.redis_password,
            "apiToken": API_TOKEN,
        }
        self.current: ProgramRun | None = None
        self.applied: replay.Applied | None = None

    def plan(self) -> ProgramRun:
        return run_program(self.config, self.build_dir, self.source_root, self.secrets)

    def redis(self) -> redis.Redis:
        return redis.Redis(host=REDIS_HOST, password=self.lab.redis_password, decode_responses=True)

    def on_orchestrator(self, command: str) -> str:
        return self.lab.check(ORCHESTRATOR, command)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    lab = Lab.from_environment()
    deployed = Deployment(lab, tmp_path_factory.mktemp("lab-deploy"))
    yield deployed
    if deployed.current is not None:
        # Leave the hosts as a destroy would, even when a test failed half-way.
        for name in reversed(replay.order(deployed.current)):
            inputs = deployed.current.registered[name].inputs
            if "delete" in inputs:
                lab.ssh(inputs["connection"]["host"], inputs["delete"], inputs.get("stdin") or "")


def api() -> httpx.Client:
    return httpx.Client(
        base_url=BASE_URL, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10
    )


def test_deploy_reports_healthy_streams(deployment: Deployment) -> None:
    deployment.current = deployment.plan()
    deployment.applied = replay.apply(deployment.lab, deployment.current)
    health = json.loads(deployment.applied.stdout["orchestrator-health"].strip().splitlines()[-1])
    assert health["status"] == "up"
    assert {name: sorted(stream["groups"]) for name, stream in health["streams"].items()} == {
        name: sorted(groups) for name, groups in GROUPS.items()
    }
    groups = json.loads(deployment.applied.stdout["redis-groups"].strip().splitlines()[-1])
    assert {name: sorted(found) for name, found in groups.items()} == {
        name: sorted(expected) for name, expected in GROUPS.items()
    }


def test_units_are_active_enabled_and_hardened(deployment: Deployment) -> None:
    for unit in UNITS:
        assert deployment.on_orchestrator(f"systemctl is-active {unit}").strip() == "active"
        assert deployment.on_orchestrator(f"systemctl is-enabled {unit}").strip() == "enabled"
    env_mode = deployment.on_orchestrator("stat -c '%a %U %G' /etc/shield-orchestrator/shield.env")
    assert env_mode.split() == ["640", "root", "shield"]
    assert deployment.on_orchestrator("ps -o user= -C uvicorn").split()[0] == "shield"
    exposure = deployment.on_orchestrator(
        f"systemd-analyze security --no-pager {UNITS[0]} | tail -1"
    )
    score = float(exposure.split("exposure level for")[1].split(":")[1].split()[0])
    assert score <= 3.0, exposure


def test_original_manual_checks(deployment: Deployment) -> None:
    auth = (
        f"REDISCLI_AUTH={deployment.lab.redis_password} redis-cli --no-auth-warning -h {REDIS_HOST}"
    )
    assert deployment.lab.check(REDIS_HOST, f"{auth} PING").strip() == "PONG"
    stream_info = deployment.lab.check(REDIS_HOST, f"{auth} XINFO STREAM shield:events")
    assert "last-generated-id" in stream_info
    group_info = deployment.lab.check(REDIS_HOST, f"{auth} XINFO GROUPS shield:ingestion_queue")
    assert "lightrag-workers" in group_info

    curl = subprocess.Popen(
        [
            "curl",
            "-sN",
            "--max-time",
            "20",
            f"{BASE_URL}/events/stream?last_id=$&access_token={API_TOKEN}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        added = deployment.lab.check(
            REDIS_HOST,
            f"{auth} XADD shield:events '*' type test.event job_id manual"
            ' data \'{"msg":"hi"}\'',
        ).strip()
        assert curl.stdout is not None
        lines = []
        deadline = time.monotonic() + 15
        while f"id: {added}" not in lines and time.monotonic() < deadline:
            lines.append(curl.stdout.readline().strip())
    finally:
        curl.kill()
        curl.wait()
    assert f"id: {added}" in lines and "event: test.event" in lines

    with api() as client:
        replayed = subprocess.run(
            [
                "curl",
                "-sN",
                "--max-time",
                "3",
                f"{BASE_URL}/events/stream?last_id=0&access_token={API_TOKEN}",
            ],
            capture_output=True,
            text=True,
        ).stdout
        assert f"id: {added}" in replayed
        stats = client.get("/events/stats").json()
        assert sorted(stats["streams"]["shield:events"]["consumer_groups"]) == sorted(
            GROUPS["shield:events"]
        )
        assert (
            client.get("/events/stats", headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
    journal = deployment.on_orchestrator(f"journalctl --no-pager -u {UNITS[0]}")
    assert "access_token=***" in journal
    assert API_TOKEN not in journal


def test_worker_on_the_host_processes_a_task(deployment: Deployment) -> None:
    with api() as client:
        task_id = client.post(
            "/tasks", json={"job_id": "lab-job", "chunk_id": "c1", "content": "x"}
        ).json()["id"]
    client_redis = deployment.redis()
    deadline = time.monotonic() + 30
    completed: list[dict[str, str]] = []
    while not completed and time.monotonic() < deadline:
        completed = [
            fields
            for _, fields in client_redis.xrange("shield:events")
            if fields.get("type") == "ingestion.completed" and task_id in fields.get("data", "")
        ]
        time.sleep(0.5)
    assert completed and completed[0]["job_id"] == "lab-job"


def test_second_plan_changes_nothing(deployment: Deployment) -> None:
    assert deployment.current is not None
    assert replay.changed(deployment.current, deployment.plan()) == []


def test_code_change_redeploys_and_a_live_client_loses_nothing(deployment: Deployment) -> None:
    assert deployment.current is not None
    worker = deployment.source_root / "service" / "worker.py"
    worker.write_text(worker.read_text() + "\n# redeployed by the lab test\n")
    new_plan = deployment.plan()
    to_run = replay.changed(deployment.current, new_plan)
    assert set(to_run) == {
        "orchestrator-release-copy",
        "orchestrator-release",
        "orchestrator-units",
        "orchestrator-health",
    }
    pid_before = deployment.on_orchestrator(f"systemctl show -p MainPID --value {UNITS[0]}").strip()
    published, received = asyncio.run(
        _publish_across(deployment, lambda: replay.apply(deployment.lab, new_plan, to_run))
    )
    deployment.current = new_plan
    assert received == published
    pid_after = deployment.on_orchestrator(f"systemctl show -p MainPID --value {UNITS[0]}").strip()
    assert pid_after != pid_before
    assert "redeployed by the lab test" in deployment.on_orchestrator(
        "cat /opt/shield-orchestrator/current/service/worker.py"
    )


async def _publish_across(deployment: Deployment, redeploy: object) -> tuple[list[str], list[str]]:
    """Publish steadily while redeploying; an SSE client follows, resuming by Last-Event-ID."""
    client_redis = deployment.redis()
    start = client_redis.xadd("shield:events", {"type": "marker.start"})
    published: list[str] = []
    received: list[str] = []
    done = asyncio.Event()

    async def publish() -> None:
        for index in range(200):
            published.append(
                client_redis.xadd(
                    "shield:events", {"type": "redeploy.tick", "data": json.dumps({"n": index})}
                )
            )
            await asyncio.sleep(0.05)
        done.set()

    async def follow() -> None:
        def caught_up() -> bool:
            return done.is_set() and bool(received) and received[-1] == published[-1]

        params = {"types": "redeploy.tick", "access_token": API_TOKEN}
        await asyncio.wait_for(follow_sse(BASE_URL, params, received, [], caught_up, start), 120)

    async def run_redeploy() -> None:
        await asyncio.sleep(1)
        await asyncio.to_thread(redeploy)  # type: ignore[arg-type]

    await asyncio.gather(publish(), follow(), run_redeploy())
    return published, received


def test_systemd_restarts_a_killed_service(deployment: Deployment) -> None:
    pid = deployment.on_orchestrator(f"systemctl show -p MainPID --value {UNITS[0]}").strip()
    deployment.on_orchestrator(f"systemctl kill -s KILL {UNITS[0]}")
    deadline = time.monotonic() + 30
    new_pid = pid
    while time.monotonic() < deadline:
        state = deployment.on_orchestrator(f"systemctl is-active {UNITS[0]} || true").strip()
        new_pid = deployment.on_orchestrator(
            f"systemctl show -p MainPID --value {UNITS[0]}"
        ).strip()
        if state == "active" and new_pid not in (pid, "0"):
            break
        time.sleep(0.5)
    assert new_pid not in (pid, "0")
    with api() as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.get("/health/detailed").json()["status"] == "up":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert client.get("/health/detailed").json()["status"] == "up"


def test_destroy_removes_the_service_and_keeps_the_streams(deployment: Deployment) -> None:
    assert deployment.current is not None
    replay.destroy(deployment.lab, deployment.current)
    deployment.current = None
    for unit in UNITS:
        state = deployment.lab.ssh(ORCHESTRATOR, f"systemctl is-active {unit}").stdout.strip()
        assert state in ("inactive", "unknown")
        assert (
            deployment.lab.ssh(ORCHESTRATOR, f"test -e /etc/systemd/system/{unit}").returncode == 1
        )
    assert deployment.lab.ssh(ORCHESTRATOR, "test -e /opt/shield-orchestrator").returncode == 1
    client_redis = deployment.redis()
    assert {group["name"] for group in client_redis.xinfo_groups("shield:events")} == set(
        GROUPS["shield:events"]
    )
