"""The real engine on the lab: what is not ours survives, preview writes nothing, outputs are
fresh after every up, and the stack's handler runs on the host.

The tests run in file order and share one stack (the lab stack, from infra/stacks/lab.yaml),
from hosts cleared of any deployment to a destroy at the end. Each foreign unit, process or
directory a test puts on a host is removed by that test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
import redis

from harness.engine import SERVICE_RESOURCES, Engine
from harness.hosts import (
    LAB_USER_SECRETS,
    ORCHESTRATOR,
    REDIS_HOST,
    Lab,
    forget_lab_tests_user,
    lab_redis,
)
from service.core import names
from tests.support.lab_waiting import wait_until

pytestmark = pytest.mark.e2e

API_TOKEN = "e2e-safety-token-41d7"
FREE_PORT = 8100
CODE_CHANGE = {
    "orchestrator-release-copy",
    "orchestrator-release",
    "orchestrator-units",
    f"orchestrator-api-{FREE_PORT}",
    "orchestrator-worker-1",
    "orchestrator-collector",
    "orchestrator-health",
}
# Someone else's app under the legacy name, on the port our API wants (the original design's
# FastAPI app would be this).
FOREIGN_UNIT = "/etc/systemd/system/shield-orchestrator.service"
FOREIGN_UNIT_TEXT = """[Unit]
Description=Their own app, which is not ours to touch

[Service]
ExecStart=/usr/bin/python3 -m http.server 8000 --bind 127.0.10.8 --directory /srv
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
# What a snapshot leaves out: Redis's own files (the keys are compared instead) and systemd's
# clocks and random seed, which change on their own.
VOLATILE = ("/var/lib/redis", "/var/lib/systemd")


class Stack:
    def __init__(self, engine: Engine, lab: Lab) -> None:
        self.engine = engine
        self.lab = lab

    def on(self, host: str, command: str) -> str:
        return self.lab.check(host, command)

    def redis(self) -> redis.Redis:
        return lab_redis(REDIS_HOST, self.lab.redis_password)

    def snapshot(self, host: str) -> str:
        """Every file, directory and link under /opt, /etc and /var/lib: path, size, mtime."""
        prune = " -o ".join(f"-path {path}" for path in VOLATILE)
        return self.on(
            host,
            f"find /opt /etc /var/lib -xdev \\( {prune} \\) -prune -o -printf '%p %y %s %T@\\n'"
            " | sort",
        )

    def keys(self) -> dict[str, str]:
        client = self.redis()
        return {key: client.type(key) for key in client.scan_iter(count=1000)}


def clear_deployment(stack: Stack) -> None:
    """No deployment on the hosts and no identity token anywhere: hosts as never seen."""
    stack.on(
        ORCHESTRATOR,
        "systemctl stop 'shield-orch*' 2>/dev/null;"
        " rm -rf /opt/shield-orchestrator /opt/shield-orch /etc/shield-orchestrator"
        " /etc/shield-orch /etc/systemd/system/shield-orch*"
        " /etc/systemd/system/multi-user.target.wants/shield-orch*;"
        " systemctl daemon-reload; systemctl reset-failed",
    )
    stack.redis().delete(names.HOST_TOKEN_KEY)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    engine = Engine.create(tmp_path_factory.mktemp("e2e-safety"))
    lab = Lab.current()
    engine.set_config("orchestratorHostKey", lab.orchestrator_host_key)
    engine.set_config("redisHostKey", lab.redis_host_key)
    engine.set_secret("sshPrivateKey", lab.ssh_key.read_text())
    engine.set_secret("redisPassword", lab.redis_password)
    for key, value in LAB_USER_SECRETS.items():
        engine.set_secret(key, value)
    engine.set_secret("apiToken", API_TOKEN)
    # Without the front, the API on the host's own address: the port our API wants is the
    # one their app holds (the front's ownership checks are test_edge's).
    engine.set_config("edgeProxy", "none")
    engine.set_config("serviceBindAddress", ORCHESTRATOR)
    deployed = Stack(engine, lab)
    clear_deployment(deployed)
    yield deployed
    engine.run("destroy", "--yes", "--stack", "lab", check=False)
    forget_lab_tests_user(REDIS_HOST, deployed.lab.redis_password)
    deployed.lab.ssh(
        ORCHESTRATOR,
        f"systemctl disable --now shield-orchestrator.service; rm -f {FOREIGN_UNIT};"
        " systemctl daemon-reload",
    )


def test_preview_on_hosts_never_seen_writes_nothing_and_plans_creates(stack: Stack) -> None:
    hosts = (ORCHESTRATOR, REDIS_HOST)
    before = {host: stack.snapshot(host) for host in hosts}
    keys_before = stack.keys()
    assert stack.engine.preview_steps() == dict.fromkeys(SERVICE_RESOURCES, "create")
    assert {host: stack.snapshot(host) for host in hosts} == before
    assert stack.keys() == keys_before
    assert names.HOST_TOKEN_KEY not in keys_before


def test_a_foreign_process_on_our_port_stops_preview_and_up_with_one_line(stack: Stack) -> None:
    stack.on(
        ORCHESTRATOR,
        f"mkdir -p /srv && cat > {FOREIGN_UNIT} <<'UNIT'\n{FOREIGN_UNIT_TEXT}UNIT\n"
        "systemctl daemon-reload && systemctl enable --now shield-orchestrator.service",
    )
    wait_until(
        lambda: "127.0.10.8:8000" in stack.on(ORCHESTRATOR, "ss -Hltn 'sport = :8000'"),
        "their app to listen on 8000",
    )
    pid = stack.on(ORCHESTRATOR, "systemctl show -p MainPID --value shield-orchestrator").strip()
    expected = (
        f"shield-orchestrator: host {ORCHESTRATOR}: port 8000 on {ORCHESTRATOR} is held by"
        f" python3 (pid {pid}, shield-orchestrator.service); stop it or set servicePort"
    )
    before = stack.snapshot(ORCHESTRATOR)
    for command in (("preview", "--stack", "lab"), ("up", "--yes", "--stack", "lab")):
        output = stack.engine.fails(*command)
        assert expected in output, output[-3000:]
        assert "Traceback" not in output
    assert stack.snapshot(ORCHESTRATOR) == before


def test_after_moving_to_a_free_port_the_deploy_works_and_their_unit_survives(
    stack: Stack,
) -> None:
    theirs = stack.on(ORCHESTRATOR, f"sha256sum {FOREIGN_UNIT}")
    stack.engine.set_config("servicePort", str(FREE_PORT))
    stack.engine.up()
    assert stack.engine.outputs()["streamHealth"]["status"] == "up"
    with api() as client:
        assert client.get("/health/detailed").json()["status"] == "up"
    assert stack.on(ORCHESTRATOR, f"sha256sum {FOREIGN_UNIT}") == theirs
    assert stack.on(ORCHESTRATOR, "systemctl is-active shield-orchestrator.service").strip() == (
        "active"
    )
    marker = stack.on(ORCHESTRATOR, "cat /opt/shield-orchestrator/.managed-by-shield-orchestrator")
    assert marker.startswith("# Managed by shield-orchestrator")
    for path in (
        "/etc/systemd/system/shield-orchestrator@.service",
        "/etc/shield-orchestrator/shield.env",
    ):
        assert stack.on(ORCHESTRATOR, f"head -n 1 {path}").startswith("# Managed by")
    stack.engine.up("--expect-no-changes")


def test_the_handler_the_stack_ships_runs_on_the_host(stack: Stack) -> None:
    post_task("safety-job", "c1")
    wait_until(
        lambda: "shield-demo-handler v1: handled job=safety-job chunk=c1" in worker_journal(stack),
        "the demo handler's line in the worker's journal",
    )
    assert "(1 Byte)" in worker_journal(stack)  # humanize, from handlerRequirements
    stack.engine.up("--expect-no-changes")


def test_changing_the_handlers_code_redeploys_only_the_release(stack: Stack) -> None:
    module = stack.engine.root / "examples" / "demo_handler" / "shield_demo_handler.py"
    module.write_text(module.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    assert set(stack.engine.changed()) == CODE_CHANGE
    venv = stack.on(ORCHESTRATOR, "readlink /opt/shield-orchestrator/venv")
    stack.engine.up()
    assert stack.on(ORCHESTRATOR, "readlink /opt/shield-orchestrator/venv") == venv
    post_task("safety-job", "c2")
    wait_until(
        lambda: "shield-demo-handler v2: handled job=safety-job chunk=c2" in worker_journal(stack),
        "the new handler's line",
    )
    stack.engine.up("--expect-no-changes")


def test_stream_health_follows_each_no_op_up(stack: Stack) -> None:
    client = stack.redis()
    for added in (3, 5):
        for index in range(added):
            client.xadd(names.EVENTS_STREAM, {"type": "safety.tick", "data": f'{{"n": {index}}}'})
        length = client.xlen(names.EVENTS_STREAM)
        stack.engine.run("preview", "--expect-no-changes", "--stack", "lab")
        stack.engine.up("--expect-no-changes")
        health = stack.engine.outputs()["streamHealth"]
        assert health["streams"][names.EVENTS_STREAM]["length"] == length
    assert stack.engine.outputs()["redisNodes"][REDIS_HOST]["role"] == "master"


def test_a_foreign_unit_or_directory_at_our_names_stops_preview_naming_the_key(
    stack: Stack,
) -> None:
    stack.engine.run("destroy", "--yes", "--stack", "lab")
    assert stack.lab.ssh(ORCHESTRATOR, f"test -f {FOREIGN_UNIT}").returncode == 0
    template = "/etc/systemd/system/shield-orchestrator@.service"
    stack.on(ORCHESTRATOR, f"printf '[Service]\\nExecStart=/bin/true\\n' > {template}")
    stack.on(ORCHESTRATOR, "mkdir -p /opt/theirs && echo mine > /opt/theirs/app.py")
    try:
        output = stack.engine.fails("preview", "--stack", "lab")
        assert (
            f"shield-orchestrator: host {ORCHESTRATOR}: {template} exists and was not made"
            " by this deployment; set serviceName to a free name"
        ) in output
        stack.engine.set_config("serviceName", "shield-orch")
        stack.engine.set_config("installDir", "/opt/theirs")
        output = stack.engine.fails("preview", "--stack", "lab")
        assert "/opt/theirs exists and was not made by this deployment; set installDir" in output
        stack.engine.set_config("installDir", "/opt/shield-orch")
        stack.engine.up()
        assert stack.engine.outputs()["streamHealth"]["status"] == "up"
        stack.engine.run("destroy", "--yes", "--stack", "lab")
        assert stack.on(ORCHESTRATOR, f"cat {template}").startswith("[Service]")
        assert stack.on(ORCHESTRATOR, "cat /opt/theirs/app.py").strip() == "mine"
        assert stack.lab.ssh(ORCHESTRATOR, "test -e /opt/shield-orch").returncode == 1
    finally:
        stack.lab.ssh(ORCHESTRATOR, f"rm -rf {template} /opt/theirs; systemctl daemon-reload")
    assert stack.on(ORCHESTRATOR, "systemctl is-active shield-orchestrator.service").strip() == (
        "active"
    )
    assert hashlib.sha256(FOREIGN_UNIT_TEXT.encode()).hexdigest() in stack.on(
        ORCHESTRATOR, f"sha256sum {FOREIGN_UNIT}"
    )


def test_a_foreign_redis_access_directory_stops_preview_and_up_and_survives_destroy(
    stack: Stack,
) -> None:
    """After the destroy above, someone else's /etc/shield-redis-access on the Redis host: our
    access step would have written into it (and destroy removed it)."""
    theirs = "/etc/shield-redis-access"
    stack.on(REDIS_HOST, f"mkdir -p {theirs} && echo 'user app on' > {theirs}/users.acl")
    expected = (
        f"shield-orchestrator: host {REDIS_HOST}: {theirs} exists and was not made by this"
        " deployment; remove or rename it"
    )
    try:
        before = stack.snapshot(REDIS_HOST)
        for command in (("preview", "--stack", "lab"), ("up", "--yes", "--stack", "lab")):
            output = stack.engine.fails(*command)
            assert expected in output, output[-3000:]
            assert "Traceback" not in output
        assert stack.snapshot(REDIS_HOST) == before
        stack.engine.run("destroy", "--yes", "--stack", "lab")
        assert stack.on(REDIS_HOST, f"ls -A {theirs}").split() == ["users.acl"]
    finally:
        stack.lab.ssh(REDIS_HOST, f"rm -rf {theirs}")


def api() -> httpx.Client:
    return httpx.Client(
        base_url=f"http://{ORCHESTRATOR}:{FREE_PORT}",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=10,
    )


def post_task(job_id: str, chunk_id: str) -> None:
    with api() as client:
        answer = client.post(
            "/tasks", json={"job_id": job_id, "chunk_id": chunk_id, "content": "x"}
        )
        assert answer.status_code == 201, answer.text


def worker_journal(stack: Stack) -> str:
    return stack.on(ORCHESTRATOR, "journalctl --no-pager -u 'shield-orchestrator-worker@*'")
