"""The pure builders: exact text where it matters, shellcheck on every script, real runs of the
Redis scripts against the session's redis-server."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from harness.redis_server import RedisServer
from infra import host_scripts, redis_access, sentinel_scripts
from infra.config import ENV_PREFIX, SECRET_FIELDS, ServiceSettings, env_name, load
from infra.facts import parse_identity, parse_info
from service.core import names
from service.core.settings import Settings
from tests.infra.support import BASE_CONFIG, SSH_KEY, config_source
from tests.support.live_server import serve
from tests.support.service_settings import make_settings

CONFIG, _ = load(config_source(BASE_CONFIG, {"sshPrivateKey": SSH_KEY}))
SERVICE = CONFIG.service


def test_invocation_quotes_the_script_once() -> None:
    assert host_scripts.invocation("echo 'hi'", use_sudo=False) == "bash -c 'echo '\"'\"'hi'\"'\"''"
    assert host_scripts.invocation("true", use_sudo=True) == "sudo -n bash -c true"
    assert shlex.split(host_scripts.invocation("echo 'a b'", use_sudo=True)) == [
        "sudo",
        "-n",
        "bash",
        "-c",
        "echo 'a b'",
    ]


def test_api_unit_text() -> None:
    assert host_scripts.api_unit(SERVICE) == (
        "# Managed by shield-orchestrator (Pulumi): replaced and removed by its deployment.\n"
        "[Unit]\n"
        "Description=Shield orchestrator API on port %i (Redis Streams queue and event bus)\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        "User=shield\n"
        "Group=shield\n"
        "EnvironmentFile=/etc/shield-orchestrator/shield.env\n"
        "Environment=PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1\n"
        "WorkingDirectory=/opt/shield-orchestrator/current\n"
        "ExecStart=/opt/shield-orchestrator/venv/bin/uvicorn service.main:app"
        " --host 127.0.10.8 --port %i --timeout-graceful-shutdown 10"
        " --limit-concurrency 2048\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "TimeoutStopSec=30\n"
        "LimitNOFILE=65536\n" + host_scripts.HARDENING + "\n[Install]\nWantedBy=multi-user.target\n"
    )
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert directive in host_scripts.HARDENING.splitlines()


def test_worker_unit_runs_the_worker_module() -> None:
    assert (
        "ExecStart=/opt/shield-orchestrator/venv/bin/python -m service.worker\n"
        in host_scripts.worker_unit(SERVICE)
    )


def test_collector_unit_text() -> None:
    assert host_scripts.collector_unit_name(SERVICE) == "shield-orchestrator-collector.service"
    assert host_scripts.collector_unit(SERVICE) == (
        "# Managed by shield-orchestrator (Pulumi): replaced and removed by its deployment.\n"
        "[Unit]\n"
        "Description=Shield orchestrator metrics-collector\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        "User=shield\n"
        "Group=shield\n"
        "EnvironmentFile=/etc/shield-orchestrator/shield.env\n"
        "Environment=PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1\n"
        "WorkingDirectory=/opt/shield-orchestrator/current\n"
        "ExecStart=/opt/shield-orchestrator/venv/bin/python -m service.collector\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "TimeoutStopSec=30\n"
        "LimitNOFILE=65536\n" + host_scripts.HARDENING + "\n[Install]\nWantedBy=multi-user.target\n"
    )


def test_the_collector_unit_is_written_beside_workers_and_retired_where_there_are_none() -> None:
    path = "/etc/systemd/system/shield-orchestrator-collector.service"
    refusal = (
        f"ours_file {path} || fail '{path} exists and was not made by this deployment;"
        " set serviceName to a free name'\n"
    )
    retire = (
        f"if [ -e {path} ] && ours_file {path}; then\n"
        "  systemctl disable --now --quiet shield-orchestrator-collector.service"
        " 2>/dev/null || true\n"
        f"  rm -f {path}\n"
        "fi\n"
    )
    written = f"cat > {path}.tmp <<'UNIT'\n{host_scripts.collector_unit(SERVICE)}UNIT\n"
    beside = host_scripts.service_apply("h", SERVICE, ["release r"], collector=True)
    alone = host_scripts.service_apply("h", SERVICE, ["release r"], collector=False)
    assert refusal in beside and refusal in alone
    assert written in beside and retire not in beside
    assert written not in alone and retire in alone
    removed = host_scripts.service_remove(SERVICE)
    assert (
        f"if [ -e {path} ] && ours_file {path}; then\n"
        "  systemctl disable --now --quiet shield-orchestrator-collector.service"
        " 2>/dev/null || true\n"
        f"  rm -f {path} {path}.tmp\n"
        "fi\n"
    ) in removed
    checks = host_scripts.host_checks("h", SERVICE, "127.0.10.8", [8000])
    assert (
        f"ours_file {path} || conflict serviceName '{path} exists and was not made by this"
        " deployment; set serviceName to a free name'\n"
    ) in checks


def test_env_file_text_is_sorted_and_quoted() -> None:
    assert host_scripts.env_file({"B": 'say "hi"', "A": "x\\y"}) == (
        host_scripts.MARKER + '\nA="x\\\\y"\nB="say \\"hi\\""\n'
    )
    with pytest.raises(ValueError, match="SHIELD_X: a setting cannot span lines"):
        host_scripts.env_file({"SHIELD_X": "a\nb"})


def test_service_environment_carries_the_original_settings() -> None:
    environment = host_scripts.service_environment(CONFIG.app)
    assert environment["SHIELD_REDIS_URL"] == "redis://127.0.10.48:6379/0"
    assert environment["SHIELD_STREAM_MAXLEN"] == "10000"
    assert environment["SHIELD_WORKER_GROUP"] == "lightrag-workers"
    assert json.loads(environment["SHIELD_EVENT_GROUPS"])[0] == "ag-ui-frontend"
    assert not any("PASSWORD" in key or "TOKEN" in key for key in environment)


def test_every_name_in_the_env_file_is_a_settings_field() -> None:
    text = host_scripts.env_file(
        {
            **host_scripts.service_environment(CONFIG.app),
            env_name("redis_password"): "pw",
            env_name("api_token"): "token",
        }
    )
    assert text.startswith(host_scripts.MARKER + "\n")
    names = [line.split("=", 1)[0] for line in text.splitlines()[1:]]
    fields = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert names and [name for name in names if name not in fields] == []
    assert {env_name(field) for field in SECRET_FIELDS} == {
        "SHIELD_REDIS_PASSWORD",
        "SHIELD_REDIS_WORKER_PASSWORD",
        "SHIELD_API_TOKEN",
        "SHIELD_HANDLER_TOKEN",
        "SHIELD_JWT_SECRET",
    }


def test_the_service_reads_back_exactly_what_the_env_file_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    app = CONFIG.app.model_copy(
        update={"batch_size": 25, "ingestion_groups": ("x", "lightrag-workers")}
    )
    env_path = tmp_path / "shield.env"
    env_path.write_text(host_scripts.env_file(host_scripts.service_environment(app)))
    read_back = Settings(_env_file=str(env_path))  # type: ignore[call-arg]
    assert read_back == app


ALL_SCRIPTS = {
    "orchestrator_preflight": host_scripts.orchestrator_preflight("h", SERVICE, True, "3.11"),
    "release_unpack": host_scripts.release_unpack("/opt/x", "abc123", "/opt/x/incoming/i/r.tar.gz"),
    "orchestrator_identity": host_scripts.orchestrator_identity("/opt/x", create=True),
    "orchestrator_identity_read_only": host_scripts.orchestrator_identity("/opt/x", create=False),
    "redis_identity": host_scripts.redis_identity("h", CONFIG.redis, create=True),
    "redis_identity_read_only": host_scripts.redis_identity("h", CONFIG.redis, create=False),
    "redis_replica_identity": host_scripts.redis_replica_identity(
        "/opt/x", "h", CONFIG.redis, create=True
    ),
    "health_read": host_scripts.health_read("http://127.0.10.8:8000/health/detailed"),
    "redis_info": host_scripts.redis_info("h", CONFIG.redis),
    "host_checks": host_scripts.HEADER
    + host_scripts.host_checks("h", SERVICE, "127.0.10.8", [8000, 8001]),
    "venv_wheelhouse": host_scripts.venv_install(
        "/opt/x", "fastapi==1\n", "d1", "/opt/x/w.tar", None
    ),
    "venv_index": host_scripts.venv_install(
        "/opt/x", "fastapi==1\n", "d1", None, "https://pypi.example/simple"
    ),
    "service_apply": host_scripts.service_apply("h", SERVICE, ["release r", "venv v"]),
    "service_apply_collector": host_scripts.service_apply(
        "h", SERVICE, ["release r"], collector=True
    ),
    "service_remove": host_scripts.service_remove(SERVICE),
    "redis_host_checks": host_scripts.HEADER
    + host_scripts.check_prelude(SERVICE)
    + redis_access.access_checks()
    + sentinel_scripts.sentinel_checks([26379, 26380])
    + host_scripts.install_dir_check(SERVICE),
    "health_wait": host_scripts.health_wait("h", SERVICE, ["http://h:8000/health/detailed"]),
    "instance_start": host_scripts.instance_start("shield-orchestrator@8000.service", "applied t"),
    "instance_stop": host_scripts.instance_stop("shield-orchestrator@8000.service"),
    "replication_primary": sentinel_scripts.replication_apply("h", CONFIG.redis, None),
    "replication_replica": sentinel_scripts.replication_apply(
        "h", CONFIG.redis, ("127.0.10.48", 6379)
    ),
    "sentinel_apply": sentinel_scripts.sentinel_apply(
        "127.0.10.8", 26379, "shield", ("127.0.10.48", 6379), 2
    ),
    "sentinel_remove": sentinel_scripts.sentinel_remove(26379),
    "redis_preflight": host_scripts.redis_preflight("h", CONFIG.redis, True),
    "redis_groups": host_scripts.redis_groups("h", CONFIG.redis),
    "redis_drop": host_scripts.redis_drop("h", CONFIG.redis),
}


@pytest.mark.parametrize("name", sorted(ALL_SCRIPTS))
def test_shellcheck_passes(name: str) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: run `make deps` (apt shellcheck)")
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", "-"],
        input=ALL_SCRIPTS[name],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def _run(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def local_redis(redis_server: RedisServer, redis_client: redis.Redis):  # type: ignore[no-untyped-def]
    return load(
        config_source(
            {**BASE_CONFIG, "redisHost": "127.0.0.1", "redisPort": str(redis_server.port)},
            {"sshPrivateKey": SSH_KEY},
        )
    )[0].redis


def test_groups_script_creates_every_group_idempotently(
    local_redis, redis_client: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    redis_client.xadd("shield:events", {"type": "old.event"})
    for _ in range(2):
        result = _run(host_scripts.redis_groups("lab", local_redis))
        assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout.strip().splitlines()[-1])
    assert {stream: sorted(groups) for stream, groups in listed.items()} == {
        stream: sorted(spec.group for spec in local_redis.groups if spec.stream == stream)
        for stream in local_redis.streams
    }
    groups = {group["name"]: group for group in redis_client.xinfo_groups("shield:events")}
    # Created at $, as in the original design: existing events are not replayed to backends.
    assert groups["ag-ui-frontend"]["lag"] == 0
    assert redis_client.exists("shield:ingestion_queue") == 1


def test_the_worker_group_starts_at_0_so_queued_tasks_are_not_skipped(
    local_redis, redis_client: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    queued = redis_client.xadd("shield:ingestion_queue", {"job_id": "before-the-deploy"})
    assert _run(host_scripts.redis_groups("lab", local_redis)).returncode == 0
    delivered = redis_client.xreadgroup(
        "lightrag-workers", "w1", {"shield:ingestion_queue": ">"}, count=10
    )
    assert [entry_id for _, entries in delivered for entry_id, _ in entries] == [queued]
    metrics = redis_client.xreadgroup(
        "metrics-collector", "m1", {"shield:ingestion_queue": ">"}, count=10
    )
    assert metrics == []


def test_redis_scripts_fail_with_host_and_piece_named(
    local_redis, redis_client: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    redis_client.set("shield:events", "not a stream")
    result = _run(host_scripts.redis_groups("hx-sqldb-server", local_redis))
    assert result.returncode == 1
    assert result.stderr.startswith(
        "shield-orchestrator: host hx-sqldb-server: XGROUP CREATE shield:events"
    )
    dead = dataclasses.replace(local_redis, port=1)
    result = _run(host_scripts.redis_preflight("hx-sqldb-server", dead, False))
    assert result.returncode == 1
    assert "host hx-sqldb-server: Redis at 127.0.0.1:1 does not answer PING" in result.stderr


def test_password_travels_on_stdin(
    redis_server: RedisServer, local_redis, redis_client: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    redis_client.config_set("requirepass", "pw-on-stdin")
    try:
        assert _run(host_scripts.redis_preflight("h", local_redis, False)).returncode == 1
        result = _run(host_scripts.redis_preflight("h", local_redis, False), stdin="pw-on-stdin\n")
        assert result.returncode == 0 and result.stdout.strip() == "PONG"
    finally:
        authed = redis.Redis(port=redis_server.port, password="pw-on-stdin")
        authed.config_set("requirepass", "")
        authed.close()


def test_drop_script_deletes_the_streams(local_redis, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    assert _run(host_scripts.redis_groups("h", local_redis)).returncode == 0
    assert _run(host_scripts.redis_drop("h", local_redis)).returncode == 0
    assert redis_client.exists("shield:events", "shield:ingestion_queue") == 0


def test_orchestrator_identity_is_stable_until_the_install_dir_is_lost(tmp_path: Path) -> None:
    install_dir = tmp_path / "opt"
    first = parse_identity(
        _run(host_scripts.orchestrator_identity(str(install_dir), create=True)).stdout
    )
    again = parse_identity(
        _run(host_scripts.orchestrator_identity(str(install_dir), create=True)).stdout
    )
    assert first == again
    assert first.machine_id == Path("/etc/machine-id").read_text().strip()
    shutil.rmtree(install_dir)
    lost = parse_identity(
        _run(host_scripts.orchestrator_identity(str(install_dir), create=True)).stdout
    )
    assert lost.machine_id == first.machine_id and lost.token != first.token


def test_redis_identity_is_stable_until_redis_loses_its_data(
    local_redis, redis_client: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    first = parse_identity(_run(host_scripts.redis_identity("h", local_redis, create=True)).stdout)
    assert first == parse_identity(
        _run(host_scripts.redis_identity("h", local_redis, create=True)).stdout
    )
    assert first.token != "unreachable"
    redis_client.flushall()
    assert (
        parse_identity(_run(host_scripts.redis_identity("h", local_redis, create=True)).stdout)
        != first
    )
    dead = dataclasses.replace(local_redis, port=1)
    assert (
        parse_identity(_run(host_scripts.redis_identity("h", dead, create=True)).stdout).token
        == "unreachable"
    )


def test_list_settings_of_any_form_round_trip_from_stack_config_to_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    stack = {
        **BASE_CONFIG,
        "corsOrigins": '["https://ui.example:8443", "http://127.0.0.1:3000"]',
        "redisSentinels": "127.0.10.48:26379,127.0.10.49:26379",
        "taskReplicas": "1",
    }
    config, _ = load(config_source(stack, {"sshPrivateKey": SSH_KEY}))
    env_path = tmp_path / "shield.env"
    env_path.write_text(host_scripts.env_file(host_scripts.service_environment(config.app)))
    read_back = Settings(_env_file=str(env_path))  # type: ignore[call-arg]
    assert read_back.cors_origins == ("https://ui.example:8443", "http://127.0.0.1:3000")
    assert read_back.sentinel_addresses == [("127.0.10.48", 26379), ("127.0.10.49", 26379)]
    assert read_back.task_replicas == 1


def _checks(service: ServiceSettings, bind: str = "127.0.0.1", ports: tuple[int, ...] = ()) -> str:
    return (
        host_scripts.HEADER
        + host_scripts.host_checks("h", service, bind, ports)
        + host_scripts.orchestrator_identity(service.install_dir, create=True)
    )


def _local_service(tmp_path: Path) -> ServiceSettings:
    return dataclasses.replace(
        SERVICE,
        install_dir=str(tmp_path / "opt"),
        config_dir=str(tmp_path / "etc"),
        unit_name="shield-test-not-installed",
    )


def test_a_foreign_install_dir_is_reported_and_no_token_is_written(tmp_path: Path) -> None:
    service = _local_service(tmp_path)
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "app.py").write_text("theirs\n")
    result = _run(_checks(service))
    assert result.returncode == 0, result.stderr
    identity = parse_identity(result.stdout)
    assert identity.conflicts == (
        (
            "installDir",
            f"{tmp_path}/opt exists and was not made by this deployment;"
            " set installDir to a free name",
        ),
    )
    assert identity.token == "none"
    assert sorted(path.name for path in (tmp_path / "opt").iterdir()) == ["app.py"]


@pytest.mark.parametrize("ours", [host_scripts.MARKER_FILE, ".host-token"])
def test_our_install_dir_marked_or_from_before_the_markers_is_ours(
    tmp_path: Path, ours: str
) -> None:
    service = _local_service(tmp_path)
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / ours).write_text("0f0f0f\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "shield.env").write_text('SHIELD_BATCH_SIZE="10"\n')
    identity = parse_identity(_run(_checks(service)).stdout)
    assert identity.conflicts == ()
    assert identity.token != "none"


def test_a_new_host_gets_a_marked_install_dir_with_its_token(tmp_path: Path) -> None:
    service = _local_service(tmp_path)
    identity = parse_identity(_run(_checks(service)).stdout)
    assert identity.conflicts == () and identity.token != "none"
    marker = tmp_path / "opt" / host_scripts.MARKER_FILE
    assert marker.read_text() == host_scripts.MARKER + "\n"


def test_a_port_held_by_another_process_is_named_with_the_process(tmp_path: Path) -> None:
    service = _local_service(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    holder = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        found = parse_identity(_run(_checks(service, "127.0.0.1", (port,))).stdout)
        elsewhere = parse_identity(_run(_checks(service, "127.0.0.2", (port,))).stdout)
    finally:
        holder.terminate()
        holder.wait()
    name = Path(sys.executable).name
    assert found.conflicts == (
        (
            "servicePort",
            f"port {port} on h is held by {name} (pid {holder.pid}); stop it or set servicePort",
        ),
    )
    assert found.token == "none"
    assert elsewhere.conflicts == ()


def test_a_preview_identity_read_writes_nothing(
    tmp_path: Path, local_redis, redis_client: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    install_dir = tmp_path / "opt"
    found = parse_identity(
        _run(host_scripts.orchestrator_identity(str(install_dir), create=False)).stdout
    )
    assert found.token == "none" and not install_dir.exists()
    first = parse_identity(_run(host_scripts.redis_identity("h", local_redis, False)).stdout)
    assert first.token == "none"
    assert redis_client.exists(names.HOST_TOKEN_KEY) == 0
    made = parse_identity(_run(host_scripts.redis_identity("h", local_redis, True)).stdout)
    assert made.token not in ("none", "unreachable")
    again = parse_identity(_run(host_scripts.redis_identity("h", local_redis, False)).stdout)
    assert again == made


def test_the_after_run_reads_report_what_they_find(local_redis) -> None:  # type: ignore[no-untyped-def]
    down = json.loads(_run(host_scripts.health_read("http://127.0.0.1:1/health/detailed")).stdout)
    assert down["status"] == "down" and "refused" in down["error"]
    info = dict(parse_info(_run(host_scripts.redis_info("h", local_redis)).stdout))
    assert info["role"] == "master" and "master_repl_offset" in info


@pytest.mark.parametrize(
    ("text", "ours"),
    [
        (host_scripts.MARKER + '\nSHIELD_BATCH_SIZE="10"\n', True),
        ('SHIELD_BATCH_SIZE="10"\nSHIELD_BLOCK_MS="5000"\n', True),  # from before the marker
        ('DATABASE_URL="postgres://x"\n', False),
    ],
)
def test_an_env_file_is_ours_when_marked_or_only_shield_settings(
    tmp_path: Path, text: str, ours: bool
) -> None:
    env = tmp_path / "shield.env"
    env.write_text(text)
    check = (
        host_scripts.HEADER
        + host_scripts.ownership_functions(_local_service(tmp_path))
        + f"if ours_env {env}; then echo ours; else echo theirs; fi\n"
    )
    assert _run(check).stdout.strip() == ("ours" if ours else "theirs")


@pytest.mark.parametrize(
    ("text", "ours"),
    [
        (host_scripts.api_unit(SERVICE), True),
        (host_scripts.api_unit(SERVICE).split("\n", 1)[1], True),  # from before the marker
        ("[Unit]\nDescription=Their app\n[Service]\nExecStart=/bin/true\n", False),
    ],
)
def test_a_unit_is_ours_when_marked_or_one_of_ours_from_before(
    tmp_path: Path, text: str, ours: bool
) -> None:
    unit = tmp_path / "x@.service"
    unit.write_text(text)
    check = (
        host_scripts.HEADER
        + host_scripts.ownership_functions(SERVICE)
        + f"if ours_file {unit}; then echo ours; else echo theirs; fi\n"
    )
    assert _run(check).stdout.strip() == ("ours" if ours else "theirs")


def test_the_after_run_health_read_sends_the_token_from_stdin_for_the_details(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_server, api_token="health-token")
    with serve(settings) as base_url:
        script = host_scripts.health_read(f"{base_url}/health/detailed")
        with_token = json.loads(_run(script, "health-token\n").stdout)
        without = json.loads(_run(script, "\n").stdout)
    assert with_token["status"] == "up" and "shield:events" in with_token["streams"]
    assert without == {"status": "up"}
    assert "health-token" not in script
