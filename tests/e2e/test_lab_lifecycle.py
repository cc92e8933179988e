"""The real engine (CLI, Python language host, command provider) runs the real program on the lab.

The tests run in file order and share one stack, as a user's would: create, no-op, a code
change under a live SSE client, a config change, refresh, destroy, up again; then the ways
an up fails (bad key, wrong host key, unreachable host) and recovers with no state surgery;
then hosts that lost their files, rotated their key, or were rebuilt, each converging with
one up. The host-level checks (hardened units, journald redaction, restart after SIGKILL)
run against what the real `pulumi up` deployed. The last test rebuilds the lab.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
import websockets.sync.client

from harness.engine import ALL_RESOURCES, Engine
from harness.hosts import (
    LAB_USER_SECRETS,
    ORCHESTRATOR,
    REDIS_HOST,
    Lab,
    forget_lab_tests_user,
    lab_redis,
)
from service.core import names
from service.core.settings import ENV_PREFIX, Settings
from tests.support.clients import follow_sse
from tests.support.lab_front import client, front_url, lab_tls, set_front_secrets, ssl_context
from tests.support.lab_waiting import wait_until

pytestmark = pytest.mark.e2e

API_TOKEN = "e2e-api-token-5c0ffee1d2"
HANDLER_TOKEN = "e2e-handler-token-77ab19"
BASE_URL = front_url(ORCHESTRATOR)
# One instance of each template unit: the API on its port, worker number 1; and the
# metrics-collector beside the worker.
COLLECTOR = "shield-orchestrator-collector.service"
UNITS = ("shield-orchestrator@8000.service", "shield-orchestrator-worker@1.service", COLLECTOR)
TEMPLATES = ("shield-orchestrator@.service", "shield-orchestrator-worker@.service", COLLECTOR)
ENV_FILE = "/etc/shield-orchestrator/shield.env"
GROUPS = {
    names.INGESTION_STREAM: sorted(names.INGESTION_GROUPS),
    names.EVENTS_STREAM: sorted(names.EVENT_GROUPS),
}
# A code change touches the release and the units; each process restarts, health follows.
RESTART = {
    "orchestrator-units",
    "orchestrator-api-8000",
    "orchestrator-worker-1",
    "orchestrator-collector",
    "orchestrator-health",
}
CODE_CHANGE = {"orchestrator-release-copy", "orchestrator-release", *RESTART}


class Deployment:
    """The stack the tests of this file share, and the lab it runs on."""

    def __init__(self, engine: Engine, lab: Lab) -> None:
        self.engine = engine
        self.lab = lab

    def configure(self, lab: Lab) -> None:
        """Point the stack at this lab: its host keys, SSH key and Redis password."""
        self.lab = lab
        self.engine.set_config("orchestratorHostKey", lab.orchestrator_host_key)
        self.engine.set_config("redisHostKey", lab.redis_host_key)
        self.engine.set_secret("sshPrivateKey", lab.ssh_key.read_text())
        self.engine.set_secret("redisPassword", lab.redis_password)
        for key, value in LAB_USER_SECRETS.items():
            self.engine.set_secret(key, value)

    def on_orchestrator(self, command: str) -> str:
        return self.lab.check(ORCHESTRATOR, command)

    def main_pid(self, unit: str = UNITS[0]) -> str:
        return self.on_orchestrator(f"systemctl show -p MainPID --value {unit}").strip()

    def redis(self) -> redis.Redis:
        return lab_redis(REDIS_HOST, self.lab.redis_password)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    engine = Engine.create(tmp_path_factory.mktemp("e2e-project"))
    deployed = Deployment(engine, Lab.current())
    deployed.configure(deployed.lab)
    engine.set_secret("apiToken", API_TOKEN)
    engine.set_secret("handlerToken", HANDLER_TOKEN)
    set_front_secrets(engine)
    yield deployed
    # Leave the hosts as a destroy would, even when a test failed half-way.
    engine.run("destroy", "--yes", "--stack", "lab", check=False)
    forget_lab_tests_user(REDIS_HOST, deployed.lab.redis_password)


def api() -> httpx.Client:
    return client(BASE_URL, API_TOKEN)


def latency_count(metrics: str) -> float:
    """shield_task_latency_seconds_count in a /metrics text, 0 when absent."""
    for line in metrics.splitlines():
        if line.startswith("shield_task_latency_seconds_count "):
            return float(line.split()[1])
    return 0.0


def assert_healthy(deployment: Deployment) -> None:
    outputs = deployment.engine.outputs()
    assert outputs["streamHealth"]["status"] == "up"
    assert {stream: sorted(found) for stream, found in outputs["consumerGroups"].items()} == GROUPS
    with api() as client:
        assert client.get("/health/detailed").json()["status"] == "up"


def assert_no_warnings(output: str) -> None:
    assert "warning" not in output.lower(), output[-4000:]


def test_preview_plans_creates_then_up_deploys(deployment: Deployment) -> None:
    assert deployment.engine.preview_steps() == dict.fromkeys(ALL_RESOURCES, "create")
    output = deployment.engine.up()
    assert_no_warnings(output)
    assert deployment.engine.last_update_changes() == {"create": len(ALL_RESOURCES) + 1}
    assert_healthy(deployment)


def test_second_up_changes_nothing(deployment: Deployment) -> None:
    output = deployment.engine.up("--expect-no-changes")
    assert_no_warnings(output)
    assert deployment.engine.last_update_changes() == {"same": len(ALL_RESOURCES) + 1}


def test_units_are_active_enabled_and_hardened(deployment: Deployment) -> None:
    for unit in UNITS:
        assert deployment.on_orchestrator(f"systemctl is-active {unit}").strip() == "active"
        assert deployment.on_orchestrator(f"systemctl is-enabled {unit}").strip() == "enabled"
    env_mode = deployment.on_orchestrator(f"stat -c '%a %U %G' {ENV_FILE}")
    assert env_mode.split() == ["640", "root", "shield"]
    env_names = deployment.on_orchestrator(f"grep -v '^#' {ENV_FILE} | cut -d= -f1").split()
    fields = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert "SHIELD_API_TOKEN" in env_names and "SHIELD_HANDLER_TOKEN" in env_names
    assert [name for name in env_names if name not in fields] == []
    assert deployment.on_orchestrator("ps -o user= -C uvicorn").split()[0] == "shield"
    exposure = deployment.on_orchestrator(
        f"systemd-analyze security --no-pager {UNITS[0]} | tail -1"
    )
    score = float(exposure.split("exposure level for")[1].split(":")[1].split()[0])
    assert score <= 3.0, exposure


def test_worker_processes_a_task_and_the_journal_hides_the_token(deployment: Deployment) -> None:
    with api() as client:
        task_id = client.post(
            "/tasks", json={"job_id": "e2e-job", "chunk_id": "c1", "content": "x"}
        ).json()["id"]
        assert (
            client.get("/events/stats", headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
    deadline = time.monotonic() + 30
    completed: list[dict[str, str]] = []
    while not completed and time.monotonic() < deadline:
        completed = [
            fields
            for _, fields in deployment.redis().xrange(names.EVENTS_STREAM)
            if fields.get("type") == "ingestion.completed" and task_id in fields.get("data", "")
        ]
        time.sleep(0.5)
    assert completed and completed[0]["job_id"] == "e2e-job"
    # The collector beside the worker read it; the API's /metrics shows what it recorded.
    with api() as client:
        wait_until(
            lambda: latency_count(client.get("/metrics").text) >= 1,
            "shield_task_latency_seconds_count on the API's /metrics",
        )
    httpx.get(
        f"{BASE_URL}/events/stats",
        params={"access_token": API_TOKEN},
        timeout=10,
        verify=ssl_context(),
    )
    # uvicorn logs a WebSocket's handshake, query string and all, through uvicorn.error.
    ws_url = BASE_URL.replace("https://", "wss://") + "/events/ws"
    with websockets.sync.client.connect(
        f"{ws_url}?last_id=$&access_token={API_TOKEN}", ssl=ssl_context()
    ):
        pass
    journal = deployment.on_orchestrator(f"journalctl --no-pager -u {UNITS[0]}")
    assert "access_token=***" in journal
    assert "/events/ws?" in journal
    assert API_TOKEN not in journal


def default_user_refused(deployment: Deployment) -> bool:
    try:
        redis.Redis(host=REDIS_HOST, password=deployment.lab.redis_password).ping()
    except redis.exceptions.AuthenticationError:
        return True
    return False


def test_redis_default_user_is_off_and_stays_off_after_redis_restarts(
    deployment: Deployment,
) -> None:
    assert default_user_refused(deployment)
    deployment.lab.check(REDIS_HOST, "systemctl restart redis-server")
    # A restart forgets the users; our unit on the Redis host sets them again.
    wait_until(lambda: default_user_refused(deployment), "the default user to be off again", 30)
    wait_until(
        lambda: api().get("/health/detailed").json()["status"] == "up",
        "the API to reach Redis as its user again",
        30,
    )
    journal = deployment.lab.check(REDIS_HOST, "journalctl --no-pager -u shield-redis-access")
    assert "applied again: Redis restarted" in journal


def test_systemd_restarts_a_killed_service(deployment: Deployment) -> None:
    pid = deployment.main_pid()
    deployment.on_orchestrator(f"systemctl kill -s KILL {UNITS[0]}")
    wait_until(lambda: deployment.main_pid() not in (pid, "0"), "a new API process")
    wait_until(lambda: _health_status() == "up", "/health/detailed to say up")


def test_code_change_updates_only_release_and_units_and_a_live_client_loses_nothing(
    deployment: Deployment,
) -> None:
    worker = deployment.engine.root / "service" / "worker.py"
    worker.write_text(worker.read_text() + "\n# redeployed by the e2e test\n")
    assert set(deployment.engine.changed()) == CODE_CHANGE
    pid_before = deployment.main_pid()
    published, received = asyncio.run(_publish_across(deployment, deployment.engine.up))
    assert received == published
    assert deployment.main_pid() != pid_before
    assert "redeployed by the e2e test" in deployment.on_orchestrator(
        "cat /opt/shield-orchestrator/current/service/worker.py"
    )
    deployment.engine.up("--expect-no-changes")


def test_batch_size_change_rewrites_only_the_env_file_and_restarts(
    deployment: Deployment,
) -> None:
    release_before = deployment.on_orchestrator("readlink /opt/shield-orchestrator/current")
    pid_before = deployment.main_pid()
    deployment.engine.set_config("batchSize", "25")
    assert set(deployment.engine.changed()) == RESTART
    deployment.engine.up()
    assert 'SHIELD_BATCH_SIZE="25"' in deployment.on_orchestrator(f"grep BATCH_SIZE {ENV_FILE}")
    assert deployment.main_pid() != pid_before
    assert deployment.on_orchestrator("readlink /opt/shield-orchestrator/current") == release_before
    assert_healthy(deployment)


def test_refresh_finds_nothing_to_change(deployment: Deployment) -> None:
    deployment.engine.run("refresh", "--yes", "--stack", "lab")
    deployment.engine.up("--expect-no-changes")


def test_destroy_removes_the_service_and_keeps_streams_and_groups(
    deployment: Deployment,
) -> None:
    deployment.engine.run("destroy", "--yes", "--stack", "lab")
    for unit in UNITS:
        state = deployment.lab.ssh(ORCHESTRATOR, f"systemctl is-active {unit}").stdout.strip()
        assert state in ("inactive", "unknown")
    for unit in TEMPLATES:
        assert deployment.lab.ssh(ORCHESTRATOR, f"test -e /etc/systemd/system/{unit}").returncode
    assert deployment.lab.ssh(ORCHESTRATOR, "test -e /opt/shield-orchestrator").returncode == 1
    client = deployment.redis()
    for stream, groups in GROUPS.items():
        assert sorted(group["name"] for group in client.xinfo_groups(stream)) == groups


def test_up_after_destroy_recreates_everything(deployment: Deployment) -> None:
    assert deployment.engine.preview_steps() == dict.fromkeys(ALL_RESOURCES, "create")
    deployment.engine.up()
    assert_healthy(deployment)


def test_bad_config_key_fails_preview_naming_it(deployment: Deployment) -> None:
    deployment.engine.set_config("batchSize", "0")
    try:
        output = deployment.engine.fails("preview", "--stack", "lab")
        assert "shield-orchestrator:batchSize" in output
        assert "Traceback" not in output
    finally:
        deployment.engine.set_config("batchSize", "25")
    deployment.engine.up("--expect-no-changes")


def test_wrong_host_key_fails_naming_the_host_and_the_next_up_recovers(
    deployment: Deployment,
) -> None:
    deployment.engine.set_config("orchestratorHostKey", deployment.lab.redis_host_key)
    output = deployment.engine.fails("up", "--yes", "--stack", "lab")
    assert f"host {ORCHESTRATOR} (orchestrator)" in output
    assert "orchestratorHostKey" in output and "Traceback" not in output
    deployment.engine.set_config("orchestratorHostKey", deployment.lab.orchestrator_host_key)
    deployment.engine.up("--expect-no-changes")


def test_unreachable_host_fails_naming_it_and_the_next_up_recovers(
    deployment: Deployment,
) -> None:
    deployment.engine.set_config("redisSshPort", "1")
    try:
        output = deployment.engine.fails("up", "--yes", "--stack", "lab")
        assert f"host {REDIS_HOST} (redis)" in output and "Traceback" not in output
    finally:
        deployment.engine.remove_config("redisSshPort")
    deployment.engine.up("--expect-no-changes")


def test_host_that_lost_its_files_converges_in_one_up(deployment: Deployment) -> None:
    deployment.on_orchestrator(
        f"systemctl disable --now {' '.join(UNITS)}"
        " && rm -rf /opt/shield-orchestrator /etc/shield-orchestrator"
        " " + " ".join(f"/etc/systemd/system/{name}" for name in TEMPLATES)
    )
    deployment.engine.up()
    assert_healthy(deployment)
    deployment.engine.up("--expect-no-changes")


def test_rotated_host_key_needs_only_the_new_key_then_destroy_works(
    deployment: Deployment,
) -> None:
    deployment.lab = deployment.lab.rotate_host_key(ORCHESTRATOR)
    output = deployment.engine.fails("preview", "--stack", "lab")
    assert f"host {ORCHESTRATOR} (orchestrator)" in output
    deployment.engine.set_config("orchestratorHostKey", deployment.lab.orchestrator_host_key)
    deployment.engine.up()
    assert_healthy(deployment)
    deployment.engine.run("destroy", "--yes", "--stack", "lab")
    assert deployment.lab.ssh(ORCHESTRATOR, "test -e /opt/shield-orchestrator").returncode == 1
    deployment.engine.up()
    assert_healthy(deployment)


def test_no_secret_in_state_engine_output_or_journals(deployment: Deployment) -> None:
    key_body = "".join(
        line
        for line in deployment.lab.ssh_key.read_text().splitlines()
        if not line.startswith("-----")
    )
    secrets = {
        "ssh private key": key_body[20:60],
        "redis password": deployment.lab.redis_password,
        "api token": API_TOKEN,
        "handler token": HANDLER_TOKEN,
        "redis api password": LAB_USER_SECRETS["redisApiPassword"],
        "redis worker password": LAB_USER_SECRETS["redisWorkerPassword"],
        # The front's key: a line from the middle of its PEM body.
        "tls private key": lab_tls().private_key.splitlines()[1],
    }
    engine = deployment.engine
    haystacks = {
        "state files": "".join(
            path.read_text(errors="replace")
            for path in engine.state_dir.rglob("*")
            if path.is_file()
        ),
        "stack export": engine.export(),
        "stack config": (engine.root / "Pulumi.lab.yaml").read_text(),
        "engine output": "\n".join(engine.transcript),
        "orchestrator journal": deployment.lab.check(ORCHESTRATOR, "journalctl --no-pager"),
        "redis journal": deployment.lab.check(REDIS_HOST, "journalctl --no-pager"),
    }
    assert len(haystacks["state files"]) > 1000 and len(haystacks["orchestrator journal"]) > 1000
    found = [
        f"{secret} in {where}"
        for secret, value in secrets.items()
        for where, text in haystacks.items()
        if value in text
    ]
    assert found == []


def test_rebuilt_lab_converges_in_one_up_and_destroys(deployment: Deployment) -> None:
    deployment.configure(Lab.rebuild())
    deployment.engine.up()
    assert_healthy(deployment)
    deployment.engine.up("--expect-no-changes")
    deployment.engine.run("destroy", "--yes", "--stack", "lab")
    assert deployment.lab.ssh(ORCHESTRATOR, "test -e /opt/shield-orchestrator").returncode == 1


def _health_status() -> str:
    try:
        with api() as client:
            reply = client.get("/health/detailed")
            # The front answers 502 while no API process is up.
            if reply.status_code != 200:
                return f"status {reply.status_code}"
            status: str = reply.json()["status"]
            return status
    except httpx.HTTPError:
        return "down"


async def _publish_across(
    deployment: Deployment, redeploy: Callable[[], object]
) -> tuple[list[str], list[str]]:
    """Publish steadily while redeploying; an SSE client follows, resuming by Last-Event-ID."""
    client_redis = deployment.redis()
    start = client_redis.xadd(names.EVENTS_STREAM, {"type": "marker.start"})
    published: list[str] = []
    received: list[str] = []
    done = asyncio.Event()
    redeployed = asyncio.Event()

    async def publish() -> None:
        index = 0
        while not redeployed.is_set() or index < 40:
            published.append(
                client_redis.xadd(
                    names.EVENTS_STREAM,
                    {"type": "redeploy.tick", "data": json.dumps({"n": index})},
                )
            )
            index += 1
            await asyncio.sleep(0.05)
        done.set()

    async def follow() -> None:
        def caught_up() -> bool:
            return done.is_set() and bool(received) and received[-1] == published[-1]

        params = {"types": "redeploy.tick", "access_token": API_TOKEN}
        await asyncio.wait_for(
            follow_sse(BASE_URL, params, received, [], caught_up, start, ssl_context()), 600
        )

    async def run_redeploy() -> None:
        await asyncio.sleep(1)
        try:
            await asyncio.to_thread(redeploy)
        finally:
            redeployed.set()

    await asyncio.gather(publish(), follow(), run_redeploy())
    return published, received
