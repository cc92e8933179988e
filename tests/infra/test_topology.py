"""Several orchestrator and worker hosts, API processes as template instances, and Sentinel."""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from infra.config import StackConfigError, load
from infra.facts import parse_identity
from infra.program import observe
from infra.stack import Identities, current_primary, redis_nodes
from tests.infra.support import (
    BASE_CONFIG,
    REDIS_PASSWORD,
    SSH_KEY,
    TLS_SECRETS,
    ProgramRun,
    config_source,
    plain_strings,
    run_program,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"sshPrivateKey": SSH_KEY, "redisPassword": REDIS_PASSWORD}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"
HA_CONFIG = {
    **BASE_CONFIG,
    "orchestrators": json.dumps(
        [
            {"host": "127.0.10.8", "hostKey": KEY, "apiProcesses": 2, "bindAddress": "127.0.10.8"},
            {"host": "127.0.10.9", "hostKey": KEY, "apiProcesses": 2, "bindAddress": "127.0.10.9"},
        ]
    ),
    "workerHosts": json.dumps([{"host": "127.0.10.8"}, {"host": "127.0.10.9", "processes": 2}]),
    "redisMode": "sentinel",
    "redisReplicas": json.dumps([{"host": "127.0.10.49", "hostKey": KEY}]),
    "redisSentinels": "127.0.10.48:26379,127.0.10.49:26379,127.0.10.8:26379",
}
HA_IDENTITIES = Identities(
    by_host={"127.0.10.8": "o8", "127.0.10.48": "r48", "127.0.10.9": "o9", "127.0.10.49": "r49"},
    redis_nodes={
        "127.0.10.48": {"role": "master", "master_repl_offset": "1200"},
        "127.0.10.49": {
            "role": "slave",
            "master_repl_offset": "1100",
            "master_host": "127.0.10.48",
            "master_port": "6379",
            "master_link_status": "up",
        },
    },
)


@pytest.fixture
def source_root(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(
        REPO_ROOT / "service", root / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def ha_run(tmp_path: Path, source_root: Path, **overrides: str) -> ProgramRun:
    return run_program(
        {**HA_CONFIG, **overrides},
        tmp_path / "build",
        source_root,
        secrets=SECRETS,
        identities=HA_IDENTITIES,
    )


def test_the_legacy_keys_give_one_host_with_one_api_process_and_one_worker() -> None:
    config, _ = load(config_source(BASE_CONFIG, SECRETS))
    (host,) = config.topology.app_hosts
    assert (host.name, host.public_host, host.api_ports, host.worker_processes) == (
        "orchestrator",
        "127.0.10.8",
        (8000,),
        1,
    )
    assert config.topology.mode == "single" and config.app.task_replicas == 0


def test_apiProcesses_gives_one_port_per_process() -> None:  # noqa: N802 - the key's name
    config, _ = load(config_source({**BASE_CONFIG, "apiProcesses": "3"}, SECRETS))
    assert config.topology.app_hosts[0].api_ports == (8000, 8001, 8002)


def test_sentinel_mode_builds_the_topology_and_the_service_settings() -> None:
    config, _ = load(config_source(HA_CONFIG, SECRETS))
    topology = config.topology
    assert [(h.name, h.api_ports, h.worker_processes) for h in topology.app_hosts] == [
        ("orchestrator", (8000, 8001), 1),
        ("orchestrator-127.0.10.9", (8000, 8001), 2),
    ]
    assert [(n.host, n.replica_of) for n in topology.replicas] == [
        ("127.0.10.49", ("127.0.10.48", 6379))
    ]
    assert [(s.host, s.port) for s in topology.sentinels] == [
        ("127.0.10.48", 26379),
        ("127.0.10.49", 26379),
        ("127.0.10.8", 26379),
    ]
    assert (topology.sentinel_master, topology.sentinel_quorum) == ("shield", 2)
    assert config.app.task_replicas == 1
    assert config.topology.sentinels[2].target.host_key == KEY


def test_worker_only_hosts_run_no_api() -> None:
    config, _ = load(
        config_source(
            {**BASE_CONFIG, "workerHosts": json.dumps([{"host": "10.0.0.7", "processes": 4}])},
            SECRETS,
        )
    )
    assert [(h.name, h.api_ports, h.worker_processes) for h in config.topology.app_hosts] == [
        ("orchestrator", (8000,), 0),
        ("worker-10.0.0.7", (), 4),
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"redisMode": "cluster"}, "shield-orchestrator:redisMode: must be one of single"),
        ({"redisReplicas": ""}, "shield-orchestrator:redisReplicas: sentinel mode needs"),
        (
            {"redisSentinels": "127.0.10.48:26379,127.0.10.49:26379"},
            "shield-orchestrator:redisSentinels: sentinel mode needs three",
        ),
        (
            {"redisSentinels": "127.0.10.48:26379,127.0.10.49:26379,10.1.1.1:26379"},
            "shield-orchestrator:redisSentinels: 10.1.1.1 is not a host of this stack",
        ),
        ({"orchestrators": "{}"}, "shield-orchestrator:orchestrators: must be a JSON list"),
        (
            {"orchestrators": json.dumps([{"host": "127.0.10.8", "apiProcesses": 0}])},
            "shield-orchestrator:orchestrators: 127.0.10.8: apiProcesses must be between 1",
        ),
        (
            {"orchestrators": json.dumps([{"host": "a"}, {"host": "a"}])},
            "shield-orchestrator:orchestrators: each host may be listed once",
        ),
        (
            {"orchestrators": json.dumps([{"host": "127.0.10.8", "hostKey": "nope"}])},
            "shield-orchestrator:orchestrators: 127.0.10.8: invalid hostKey",
        ),
        ({"workerHosts": json.dumps([{"hostname": "x"}])}, "shield-orchestrator:workerHosts:"),
        ({"redisSentinelQuorum": "4"}, "shield-orchestrator:redisSentinelQuorum: must be"),
    ],
)
def test_bad_topology_values_name_the_key(override: dict[str, str], message: str) -> None:
    with pytest.raises(StackConfigError) as error:
        load(config_source({**HA_CONFIG, **override}, SECRETS))
    assert str(error.value).startswith(message)


def test_sentinel_mode_registers_replication_then_sentinels_then_the_service(
    tmp_path: Path, source_root: Path
) -> None:
    run = ha_run(tmp_path, source_root)
    assert run.registered["redis-primary"].type == "shield:infra:RedisReplication"
    assert run.registered["sentinel-127.0.10.8"].type == "shield:infra:RedisSentinel"
    replica = run.registered["redis-replica-127.0.10.49-replication"]
    assert replica.inputs["connection"]["host"] == "127.0.10.49"
    assert "REPLICAOF 127.0.10.48 6379" in replica.inputs["create"]
    primary = run.registered["redis-primary-replication"]
    assert replica.dependencies == [run_urn(run, "redis-primary-replication")]
    assert "REPLICAOF" not in primary.inputs["create"]
    sentinel = run.registered["sentinel-127.0.10.8-setup"]
    assert "sentinel monitor shield 127.0.10.48 6379 2" in sentinel.inputs["create"]
    assert "# host o8" in sentinel.inputs["create"]
    units = run.registered["orchestrator-127.0.10.9-units"]
    assert run_urn(run, "sentinel-127.0.10.49-setup") in units.dependencies
    env = units.inputs["stdin"]
    assert 'SHIELD_TASK_REPLICAS="1"' in env
    assert "SHIELD_REDIS_SENTINELS=" in env and "127.0.10.8:26379" in env


def run_urn(run: ProgramRun, name: str) -> str:
    return next(urn for urn in _all_urns(run) if urn.endswith("::" + name))


def _all_urns(run: ProgramRun) -> list[str]:
    found = []
    for item in run.registered.values():
        found += item.dependencies
        if item.parent:
            found.append(item.parent)
    return found


def test_each_process_is_its_own_step_and_health_checks_every_port(
    tmp_path: Path, source_root: Path
) -> None:
    run = ha_run(tmp_path, source_root)
    for host in ("orchestrator", "orchestrator-127.0.10.9"):
        assert {f"{host}-api-8000", f"{host}-api-8001", f"{host}-worker-1"} <= set(run.registered)
        health = shlex.split(run.registered[f"{host}-health"].inputs["create"])[-1]
        assert "/health/detailed" in health and ":8001/health/detailed" in health
    assert "orchestrator-worker-2" not in run.registered
    assert "orchestrator-127.0.10.9-worker-2" in run.registered
    start = shlex.split(run.registered["orchestrator-api-8001"].inputs["create"])[-1]
    assert "systemctl restart shield-orchestrator@8001.service" in start
    stop = shlex.split(run.registered["orchestrator-api-8001"].inputs["delete"])[-1]
    assert "systemctl disable --now --quiet shield-orchestrator@8001.service" in stop


def test_scaling_api_processes_changes_only_those_steps(tmp_path: Path, source_root: Path) -> None:
    one = run_program({**BASE_CONFIG}, tmp_path / "build", source_root)
    two = run_program({**BASE_CONFIG, "apiProcesses": "2"}, tmp_path / "build", source_root)
    before, after = _inputs(one), _inputs(two)
    assert set(after) - set(before) == {"orchestrator-api-8001"}
    assert {name for name in before if before[name] != after[name]} == {"orchestrator-health"}


def test_the_password_is_never_plain_in_sentinel_mode(tmp_path: Path, source_root: Path) -> None:
    run = ha_run(tmp_path, source_root)
    leaks = [
        name
        for name, item in run.registered.items()
        for text in plain_strings(item.raw)
        if REDIS_PASSWORD in text
    ]
    assert leaks == []
    sentinel = run.registered["sentinel-127.0.10.49-setup"].raw
    assert sentinel["stdin"]["value"] == REDIS_PASSWORD + "\n"


def test_outputs_list_every_api_process_and_each_redis_nodes_role(
    tmp_path: Path, source_root: Path
) -> None:
    run = ha_run(tmp_path, source_root)
    assert run.outputs["apiEndpoints"] == [
        "http://127.0.10.8:8000",
        "http://127.0.10.8:8001",
        "http://127.0.10.9:8000",
        "http://127.0.10.9:8001",
    ]


def _inputs(run: ProgramRun) -> dict[str, object]:
    return {name: item.inputs for name, item in run.registered.items()}


def test_redis_nodes_show_role_offset_and_lag_and_the_current_primary() -> None:
    config, _ = load(config_source(HA_CONFIG, SECRETS))
    assert redis_nodes(config, HA_IDENTITIES.redis_nodes) == {
        "127.0.10.48": {"role": "master", "offset": 1200},
        "127.0.10.49": {
            "role": "slave",
            "offset": 1100,
            "primary": "127.0.10.48:6379",
            "link": "up",
            "lag_bytes": 100,
        },
    }
    assert current_primary(config, HA_IDENTITIES.redis_nodes) == "127.0.10.48:6379"
    promoted = Identities(
        HA_IDENTITIES.by_host,
        {"127.0.10.48": {"role": "slave"}, "127.0.10.49": {"role": "master"}},
    )
    assert current_primary(config, promoted.redis_nodes) == "127.0.10.49:6379"


def test_identity_output_carries_the_replication_info() -> None:
    identity = parse_identity("machine-id m\ntoken t\ninfo role:slave\ninfo master_repl_offset:7\n")
    assert identity.info == (("role", "slave"), ("master_repl_offset", "7"))
    assert identity.digest == parse_identity("machine-id m\ntoken t\n").digest


def test_the_lab_ha_stack_is_the_issues_topology() -> None:
    stack = yaml.safe_load((REPO_ROOT / "infra" / "stacks" / "lab-ha.yaml").read_text())
    values = {key.split(":", 1)[1]: value for key, value in stack["config"].items()}
    keys = {host: KEY for host in ("127.0.10.8", "127.0.10.9", "127.0.10.48", "127.0.10.49")}
    config, _ = load(
        config_source({**values, "hostKeys": json.dumps(keys)}, {**SECRETS, **TLS_SECRETS})
    )
    topology = config.topology
    assert [(h.public_host, h.api_ports, h.worker_processes) for h in topology.app_hosts] == [
        ("127.0.10.8", (8000, 8001), 1),
        ("127.0.10.9", (8000, 8001), 1),
    ]
    # Each host's front on its own address; its API on a loopback address of its own.
    assert [(h.edge_address, h.bind_address, h.base_urls) for h in topology.app_hosts] == [
        ("127.0.10.8", "127.0.1.8", ("https://127.0.10.8",)),
        ("127.0.10.9", "127.0.1.9", ("https://127.0.10.9",)),
    ]
    assert [node.host for node in topology.replicas] == ["127.0.10.49"]
    assert [(s.host, s.port) for s in topology.sentinels] == [
        ("127.0.10.48", 26379),
        ("127.0.10.49", 26379),
        ("127.0.10.8", 26379),
    ]
    assert all(host.target.host_key == KEY for host in topology.app_hosts)
    first = topology.app_hosts[0].target
    assert first.host == "127.0.10.8" and first.host_key == KEY
    assert config.topology.replicas[0].target.host_key == KEY


def test_bad_host_keys_name_the_key() -> None:
    with pytest.raises(StackConfigError, match="shield-orchestrator:hostKeys: h: invalid host"):
        load(config_source({**BASE_CONFIG, "hostKeys": '{"h": "x"}'}, SECRETS))


def test_the_single_host_keys_fold_into_the_host_lists(tmp_path: Path, source_root: Path) -> None:
    legacy = {
        **BASE_CONFIG,
        "orchestratorHostKey": KEY,
        "redisHostKey": KEY,
        "apiProcesses": "2",
    }
    listed = {
        "taskHandler": "log-and-ack",
        "orchestrators": json.dumps([{"host": "127.0.10.8", "hostKey": KEY, "apiProcesses": 2}]),
        "hostKeys": json.dumps({"127.0.10.48": KEY}),
        "redisHost": "127.0.10.48",
        "packageSource": "index",
        "serviceBindAddress": "127.0.10.8",
        "edgeProxy": "none",
    }
    old, _ = load(config_source(legacy, SECRETS))
    new, _ = load(config_source(listed, SECRETS))
    strip = {"host_key_setting": "-"}
    assert [
        dataclasses.replace(h, target=dataclasses.replace(h.target, **strip))
        for h in old.topology.app_hosts
    ] == [
        dataclasses.replace(h, target=dataclasses.replace(h.target, **strip))
        for h in new.topology.app_hosts
    ]
    assert old.topology.primary.target.host_key == new.topology.primary.target.host_key == KEY
    before = run_program(legacy, tmp_path / "build", source_root, secrets=SECRETS)
    after = run_program(listed, tmp_path / "build", source_root, secrets=SECRETS)
    assert _inputs(before) == _inputs(after)


def test_the_single_host_ssh_keys_reach_the_folded_host() -> None:
    config, _ = load(
        config_source(
            {**BASE_CONFIG, "orchestratorSshHost": "10.9.9.9", "orchestratorSshPort": "2222"},
            SECRETS,
        )
    )
    (host,) = config.topology.app_hosts
    assert (host.public_host, host.target.host, host.target.port) == (
        "127.0.10.8",
        "10.9.9.9",
        2222,
    )
    assert host.target.pin_hint == "orchestratorHostKey"
    assert config.topology.roles("127.0.10.8") == ("orchestrator",)
    assert config.topology.roles("127.0.10.48") == ("redis",)


def test_orchestratorHost_beside_a_different_list_names_the_key() -> None:  # noqa: N802
    stack = {**BASE_CONFIG, "orchestrators": json.dumps([{"host": "127.0.10.9"}])}
    with pytest.raises(StackConfigError, match="shield-orchestrator:orchestratorHost: must be"):
        load(config_source(stack, SECRETS))


def _committed(stack_file: str) -> dict[str, str]:
    stack = yaml.safe_load((REPO_ROOT / stack_file).read_text())
    return {key.split(":", 1)[1]: str(value) for key, value in stack["config"].items()}


@pytest.mark.parametrize("stack_file", ["infra/stacks/lab.yaml", "Pulumi.dev.yaml"])
def test_the_committed_single_host_stacks_still_load(stack_file: str) -> None:
    # What each lab or user adds: the handler (dev names none), host keys and the token, and
    # (scripts/deploy-lab) the lab's Redis users' passwords.
    users = {"redisPassword": "admin", "redisApiPassword": "api", "redisWorkerPassword": "w"}
    values = {
        "taskHandler": "log-and-ack",
        **_committed(stack_file),
        "orchestratorHostKey": KEY,
        "redisHostKey": KEY,
    }
    config, _ = load(config_source(values, {**SECRETS, **users, **TLS_SECRETS, "apiToken": "t"}))
    (host,) = config.topology.app_hosts
    assert host.name == "orchestrator" and host.public_host == values["orchestratorHost"]
    assert (host.api_ports, host.worker_processes) == ((8000,), 1)
    assert config.topology.primary.host == values["redisHost"]
    assert list(config.topology.hosts()) == [values["orchestratorHost"], values["redisHost"]]


def test_observe_reads_health_and_every_redis_node_after_the_run() -> None:
    config, _ = load(config_source(HA_CONFIG, SECRETS))
    calls: list[tuple[str, str | None]] = []

    def run(host: str, script: str, secret_key: str | None) -> str:
        calls.append((host, secret_key))
        if "urllib" in script:
            assert "http://127.0.10.8:8000/health/detailed" in script
            return json.dumps({"status": "up", "streams": {"s": {"length": 7}}}) + "\n"
        role = "master" if host == "127.0.10.49" else "slave"
        return f"info role:{role}\ninfo master_repl_offset:5\n"

    observed = observe(config, run)
    assert calls == [
        ("127.0.10.8", "apiToken"),
        ("127.0.10.48", "redisPassword"),
        ("127.0.10.49", "redisPassword"),
    ]
    assert observed.health["streams"]["s"]["length"] == 7
    assert current_primary(config, observed.replication) == "127.0.10.49:6379"


def test_the_dev_stack_fails_only_on_its_missing_certificate_and_handler_naming_them() -> None:
    with pytest.raises(StackConfigError) as error:
        load(config_source(_committed("Pulumi.dev.yaml"), SECRETS))
    assert str(error.value).startswith("shield-orchestrator:tlsCertificate: is required for")
    with pytest.raises(StackConfigError) as error:
        load(config_source(_committed("Pulumi.dev.yaml"), {**SECRETS, **TLS_SECRETS}))
    assert str(error.value).startswith("shield-orchestrator:taskHandler: is required when")
    assert "workerHosts to []" in str(error.value)


def test_workerHosts_empty_deploys_no_worker_and_needs_no_handler() -> None:  # noqa: N802
    stack = {**BASE_CONFIG, "workerHosts": "[]"}
    del stack["taskHandler"]
    config, _ = load(config_source(stack, SECRETS))
    assert [(h.name, h.api_ports, h.worker_processes) for h in config.topology.app_hosts] == [
        ("orchestrator", (8000,), 0)
    ]
