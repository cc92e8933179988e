"""The resource graph under Pulumi's mocks: children, ordering, triggers and secrets."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from infra.artifacts import digest_text
from infra.stack import Identities
from tests.infra.support import (
    API_TOKEN,
    BASE_CONFIG,
    GROUPS,
    HEALTH,
    IDENTITIES,
    REDIS_PASSWORD,
    SSH_KEY,
    ProgramRun,
    plain_strings,
    run_program,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ORCHESTRATOR_CHILDREN = {
    "orchestrator-preflight": "command:remote:Command",
    "orchestrator-release-copy": "command:remote:CopyToRemote",
    "orchestrator-release": "command:remote:Command",
    "orchestrator-venv": "command:remote:Command",
    "orchestrator-units": "command:remote:Command",
    "orchestrator-api-8000": "command:remote:Command",
    "orchestrator-worker-1": "command:remote:Command",
    "orchestrator-collector": "command:remote:Command",
    "orchestrator-health": "command:remote:Command",
}
REDIS_CHILDREN = {
    "redis-preflight": "command:remote:Command",
    "redis-groups": "command:remote:Command",
}


@pytest.fixture
def source_root(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(
        REPO_ROOT / "service", root / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


@pytest.fixture
def run(tmp_path: Path, source_root: Path) -> ProgramRun:
    return run_program(BASE_CONFIG, tmp_path / "build", source_root)


def test_each_host_gets_its_component_and_parented_children(run: ProgramRun) -> None:
    assert run.registered["orchestrator"].type == "shield:infra:ServiceDeployment"
    assert run.registered["redis"].type == "shield:infra:RedisStreams"
    for children, component in ((ORCHESTRATOR_CHILDREN, "orchestrator"), (REDIS_CHILDREN, "redis")):
        for name, resource_type in children.items():
            assert run.registered[name].type == resource_type
            assert run.registered[name].parent == run.urns[component]
    commands = {name for name, item in run.registered.items() if item.type.startswith("command:")}
    assert commands == set(ORCHESTRATOR_CHILDREN) | set(REDIS_CHILDREN)


def test_connections_target_the_configured_hosts(run: ProgramRun) -> None:
    for name in ORCHESTRATOR_CHILDREN:
        assert run.registered[name].inputs["connection"]["host"] == "127.0.10.8"
    for name in REDIS_CHILDREN:
        assert run.registered[name].inputs["connection"]["host"] == "127.0.10.48"


def test_every_group_is_created_with_mkstream(run: ProgramRun) -> None:
    text = script(run, "redis-groups")
    assert 'XGROUP CREATE "$1" "$2" "$3" MKSTREAM' in text
    for stream, group, start in [
        ("shield:ingestion_queue", "lightrag-workers", "0"),
        ("shield:ingestion_queue", "metrics-collector", "'$'"),
        ("shield:events", "ag-ui-frontend", "'$'"),
        ("shield:events", "power-ui-frontend", "'$'"),
        ("shield:events", "dashboard-frontend", "'$'"),
        ("shield:events", "metrics-collector", "'$'"),
    ]:
        assert f"create {stream} {group} {start}\n" in text


@pytest.mark.parametrize(
    ("name", "after"),
    [
        ("redis-groups", "redis-preflight"),
        ("orchestrator-release-copy", "orchestrator-preflight"),
        ("orchestrator-release", "orchestrator-release-copy"),
        ("orchestrator-venv", "orchestrator-preflight"),
        ("orchestrator-units", "orchestrator-release"),
        ("orchestrator-units", "orchestrator-venv"),
        ("orchestrator-units", "redis-groups"),
        ("orchestrator-health", "orchestrator-units"),
        ("orchestrator-collector", "orchestrator-units"),
    ],
)
def test_ordering(run: ProgramRun, name: str, after: str) -> None:
    assert run.depends_on(name, after)


def test_the_collector_runs_beside_the_workers_and_restarts_with_the_units(
    run: ProgramRun,
) -> None:
    step = run.registered["orchestrator-collector"].inputs
    start = shlex.split(step["create"])[-1]
    assert "systemctl enable --quiet shield-orchestrator-collector.service" in start
    assert "systemctl restart shield-orchestrator-collector.service" in start
    stop = shlex.split(step["delete"])[-1]
    assert "systemctl disable --now --quiet shield-orchestrator-collector.service" in stop
    units = shlex.split(run.registered["orchestrator-units"].inputs["create"])[-1]
    assert "ExecStart=/opt/shield-orchestrator/venv/bin/python -m service.collector" in units


def test_a_host_without_workers_runs_no_collector(tmp_path: Path, source_root: Path) -> None:
    stack = {**BASE_CONFIG, "workerHosts": "[]"}
    del stack["taskHandler"]
    run = run_program(stack, tmp_path / "build", source_root)
    assert "orchestrator-collector" not in run.registered
    units = shlex.split(run.registered["orchestrator-units"].inputs["create"])[-1]
    assert "-m service.collector" not in units
    assert "systemctl disable --now --quiet shield-orchestrator-collector.service" in units


def test_outputs(run: ProgramRun) -> None:
    assert run.outputs["endpoints"] == {
        "sse_url": "http://127.0.10.8:8000/events/stream",
        "ws_url": "ws://127.0.10.8:8000/events/ws",
        "stats_url": "http://127.0.10.8:8000/events/stats",
        "health_url": "http://127.0.10.8:8000/health/detailed",
        "metrics_url": "http://127.0.10.8:8000/metrics",
    }
    assert run.outputs["redisAddress"] == "redis://127.0.10.48:6379/0"
    assert run.outputs["streamHealth"] == HEALTH
    assert run.outputs["consumerGroups"] == GROUPS


def script(run: ProgramRun, name: str, field: str = "create") -> str:
    """The script inside a resource's `bash -c '...'` command line."""
    return shlex.split(str(run.registered[name].inputs[field]))[-1]


def _inputs(run: ProgramRun) -> dict[str, dict[str, object]]:
    return {name: item.inputs for name, item in run.registered.items()}


def test_same_sources_change_nothing(tmp_path: Path, source_root: Path) -> None:
    first = run_program(BASE_CONFIG, tmp_path / "build", source_root)
    second = run_program(BASE_CONFIG, tmp_path / "build", source_root)
    assert _inputs(first) == _inputs(second)


def test_code_change_redeploys_and_restarts_only(tmp_path: Path, source_root: Path) -> None:
    before = _inputs(run_program(BASE_CONFIG, tmp_path / "build", source_root))
    worker = source_root / "service" / "worker.py"
    worker.write_text(worker.read_text() + "\n# a change\n")
    after = _inputs(run_program(BASE_CONFIG, tmp_path / "build", source_root))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"orchestrator-release-copy", "orchestrator-release", "orchestrator-units"}
    assert "# release " in shlex.split(str(after["orchestrator-units"]["create"]))[-1]


def test_requirements_change_rebuilds_the_venv_and_restarts(
    tmp_path: Path, source_root: Path
) -> None:
    before = _inputs(run_program(BASE_CONFIG, tmp_path / "build", source_root))
    # The hosts install the lock (make lock), so a change to the lock is what rebuilds.
    locked = source_root / "service" / "requirements.lock"
    locked.write_text(locked.read_text() + "# comment\n")
    after = _inputs(run_program(BASE_CONFIG, tmp_path / "build", source_root))
    changed = {name for name in before if before[name] != after[name]}
    assert {"orchestrator-venv", "orchestrator-units"} <= changed
    assert "orchestrator-preflight" not in changed and "redis-groups" not in changed


def test_wheelhouse_mode_copies_the_wheels_and_installs_without_an_index(
    tmp_path: Path, source_root: Path
) -> None:
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    # Named by the lock's text: its pins and their hashes.
    locked = (source_root / "service" / "requirements.lock").read_text()
    digest = digest_text(locked, "3.11.2", "manylinux2014_x86_64", "manylinux_2_28_x86_64")
    (build_dir / f"wheelhouse-{digest}.tar").write_bytes(b"")  # already built: no download
    run = run_program({**BASE_CONFIG, "packageSource": "wheelhouse"}, build_dir, source_root)
    copy = run.registered["orchestrator-wheelhouse-copy"]
    assert copy.inputs["remotePath"] == (
        f"/opt/shield-orchestrator/incoming/{IDENTITIES.of('127.0.10.8')}/wheelhouse-{digest}.tar"
    )
    assert run.depends_on("orchestrator-venv", "orchestrator-wheelhouse-copy")
    assert '--no-index --find-links "$wheels"' in script(run, "orchestrator-venv")


def test_secrets_stay_secret_in_every_input(tmp_path: Path, source_root: Path) -> None:
    secrets = {"sshPrivateKey": SSH_KEY, "redisPassword": REDIS_PASSWORD, "apiToken": API_TOKEN}
    run = run_program(BASE_CONFIG, tmp_path / "build", source_root, secrets=secrets)
    leaks = [
        (name, text)
        for name, item in run.registered.items()
        for text in plain_strings(item.raw)
        for secret in secrets.values()
        if secret.strip() in text
    ]
    assert leaks == []
    units = run.registered["orchestrator-units"].raw
    assert "stdin" in units and units["stdin"].get("value", "").count("SHIELD_API_TOKEN") == 1
    assert run.registered["redis-groups"].raw["stdin"]["value"] == REDIS_PASSWORD + "\n"


def test_unpinned_host_keys_are_accepted_but_pinned_ones_are_passed(
    tmp_path: Path, source_root: Path
) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"
    run = run_program({**BASE_CONFIG, "orchestratorHostKey": key}, tmp_path / "build", source_root)
    assert run.registered["orchestrator-units"].inputs["connection"]["hostKey"] == key
    assert "hostKey" not in run.registered["redis-groups"].inputs["connection"]


def test_non_root_user_runs_scripts_through_sudo(tmp_path: Path, source_root: Path) -> None:
    run = run_program({**BASE_CONFIG, "sshUser": "deploy"}, tmp_path / "build", source_root)
    for name in ("orchestrator-units", "redis-groups", "orchestrator-venv"):
        assert str(run.registered[name].inputs["create"]).startswith("sudo -n bash -c ")


def test_destroy_keeps_streams_unless_asked(tmp_path: Path, source_root: Path) -> None:
    kept = run_program(BASE_CONFIG, tmp_path / "build", source_root)
    assert "delete" not in kept.registered["redis-groups"].inputs
    dropped = run_program(
        {**BASE_CONFIG, "dropStreamsOnDestroy": "true"}, tmp_path / "build", source_root
    )
    assert "rcli DEL shield:ingestion_queue shield:events shield:ingestion_queue:dlq" in script(
        dropped, "redis-groups", "delete"
    )


def test_preview_warns_about_each_unpinned_host_key(
    tmp_path: Path, source_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"
    run_program({**BASE_CONFIG, "orchestratorHostKey": key}, tmp_path / "build", source_root)
    warnings = [
        record.getMessage() for record in caplog.records if "not pinned" in record.getMessage()
    ]
    assert len(warnings) == 1
    assert warnings[0] == (
        "host 127.0.10.48 (redis): its SSH host key is not pinned, so any key is accepted;"
        " set redisHostKey to the line from ssh-keyscan"
    )


def test_no_step_asks_the_host_to_accept_environment_variables(run: ProgramRun) -> None:
    for name in (*ORCHESTRATOR_CHILDREN, *REDIS_CHILDREN):
        if run.registered[name].type == "command:remote:Command":
            assert run.registered[name].inputs["addPreviousOutputInEnv"] is False


def test_a_rebuilt_host_changes_every_step_on_it_and_nothing_elsewhere(
    tmp_path: Path, source_root: Path
) -> None:
    before = _inputs(run_program(BASE_CONFIG, tmp_path / "build", source_root))
    rebuilt = Identities(by_host={**IDENTITIES.by_host, "127.0.10.8": "a-new-machine"})
    after = _inputs(run_program(BASE_CONFIG, tmp_path / "build", source_root, identities=rebuilt))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == set(ORCHESTRATOR_CHILDREN)
    assert "/incoming/a-new-machine/" in str(after["orchestrator-release-copy"]["remotePath"])
    assert "# host a-new-machine" in shlex.split(str(after["orchestrator-units"]["create"]))[-1]
