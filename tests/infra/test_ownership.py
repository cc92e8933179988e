"""Never adopt someone else's directory or unit: the ownership checks as real shell, on
temporary directories, and the identity read's checks on every kind of host."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from infra import host_scripts, redis_access, sentinel_scripts
from infra.config import ServiceSettings, load
from infra.facts import parse_identity
from infra.program import identity_script
from tests.infra.support import BASE_CONFIG, REDIS_PASSWORD, SSH_KEY, config_source

CONFIG, _ = load(config_source(BASE_CONFIG, {"sshPrivateKey": SSH_KEY}))
SERVICE = CONFIG.service
MARKER_LINE = host_scripts.MARKER + "\n"
FOREIGN = "exists and was not made by this deployment"


def _run(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env
    )


def _service(tmp_path: Path) -> ServiceSettings:
    return dataclasses.replace(
        SERVICE,
        install_dir=str(tmp_path / "opt"),
        config_dir=str(tmp_path / "etc"),
        unit_name="shield-test-not-installed",
    )


def _ask(service: ServiceSettings, function: str, path: Path) -> str:
    script = (
        host_scripts.HEADER
        + host_scripts.ownership_functions(service)
        + f"if {function} {path}; then echo yes; else echo no; fi\n"
    )
    return _run(script).stdout.strip()


def _make(path: Path, files: dict[str, str]) -> None:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)


@pytest.mark.parametrize(
    ("files", "adoptable", "removable"),
    [
        pytest.param(None, "yes", "no", id="absent"),
        pytest.param({}, "yes", "no", id="empty: nothing to lose, but not ours to remove"),
        pytest.param({host_scripts.MARKER_FILE: MARKER_LINE}, "yes", "yes", id="marked"),
        pytest.param({".host-token": "0f0f\n"}, "yes", "yes", id="our token, before markers"),
        pytest.param({"shield.env": 'SHIELD_BATCH_SIZE="10"\n'}, "yes", "no", id="our env only"),
        pytest.param({"shield.env": 'DATABASE_URL="postgres://x"\n'}, "no", "no", id="their env"),
        pytest.param({"app.py": "theirs\n"}, "no", "no", id="their files"),
    ],
)
def test_a_directory_is_adopted_only_when_it_holds_nothing_of_theirs_and_removed_only_if_marked(
    tmp_path: Path, files: dict[str, str] | None, adoptable: str, removable: str
) -> None:
    service = _service(tmp_path)
    target = tmp_path / "etc"
    if files is not None:
        _make(target, files)
    assert _ask(service, "ours_dir", target) == adoptable
    assert _ask(service, "marked_dir", target) == removable


def test_a_plain_file_at_a_directorys_name_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "opt").write_text("theirs\n")
    assert _ask(_service(tmp_path), "ours_dir", tmp_path / "opt") == "no"


def test_destroy_removes_only_marked_directories() -> None:
    script = host_scripts.service_remove(SERVICE)
    assert (
        "for dir in /opt/shield-orchestrator /etc/shield-orchestrator; do\n"
        '  if [ -e "$dir" ] && marked_dir "$dir"; then rm -rf "$dir"; fi\n'
        "done\n"
    ) in script
    assert 'ours_dir "$dir"' not in script


@pytest.mark.parametrize(
    ("files", "ours"),
    [
        pytest.param(None, "yes", id="absent"),
        pytest.param({}, "yes", id="empty"),
        pytest.param({host_scripts.MARKER_FILE: MARKER_LINE, "x": ""}, "yes", id="marked"),
        pytest.param({"sentinel-26379.conf": "port 26379\n"}, "yes", id="ours before markers"),
        pytest.param({"sentinel-26379.conf": "", "notes.txt": ""}, "no", id="their file too"),
        pytest.param({"users.acl": "user x\n"}, "no", id="theirs"),
    ],
)
def test_a_redis_hosts_directory_is_ours_only_when_marked_empty_or_ours_before_markers(
    tmp_path: Path, files: dict[str, str] | None, ours: str
) -> None:
    target = tmp_path / "dir"
    if files is not None:
        _make(target, files)
    test = host_scripts.dir_is_ours(str(target), sentinel_scripts.SENTINEL_FILES)
    assert _run(f"if {test}; then echo yes; else echo no; fi").stdout.strip() == ours


def test_the_redis_hosts_access_unit_and_directory_are_checked_in_the_identity_read() -> None:
    marker = "'# Managed by shield-orchestrator (Pulumi): replaced and removed by its deployment.'"
    assert redis_access.access_checks() == (
        "[ ! -e /etc/systemd/system/shield-redis-access.service ]"
        ' || [ "$(head -n 1 /etc/systemd/system/shield-redis-access.service 2>/dev/null)"'
        f" = {marker} ]"
        " || conflict - '/etc/systemd/system/shield-redis-access.service exists and was not"
        " made by this deployment; remove or rename it'\n"
        "{ [ ! -e /etc/shield-redis-access ] || { [ -d /etc/shield-redis-access ]"
        " && { [ -f /etc/shield-redis-access/.managed-by-shield-orchestrator ]"
        ' || [ -z "$(find /etc/shield-redis-access -mindepth 1 -maxdepth 1 -print -quit)" ];'
        " }; }; }"
        " || conflict - '/etc/shield-redis-access exists and was not made by this deployment;"
        " remove or rename it'\n"
    )


def test_the_access_step_refuses_a_foreign_directory_before_writing_into_it() -> None:
    script = redis_access.access_apply("h", 6379, redis_access.RedisAccess(maxmemory="64mb"))
    refusal = (
        f"{host_scripts.dir_is_ours(redis_access.ACCESS_DIR)}"
        " || fail '/etc/shield-redis-access exists and was not made by this deployment;"
        " remove or rename it'\n"
    )
    assert refusal in script
    assert script.index(refusal) < script.index("install -d -m 0700")
    # Removal stays as it was: only a directory carrying our marker.
    assert (
        "if [ -e /etc/shield-redis-access/.managed-by-shield-orchestrator ];"
        " then rm -rf /etc/shield-redis-access; fi\n"
    ) in redis_access.access_remove("h", 6379, redis_access.RedisAccess(maxmemory="64mb"))


def test_the_sentinel_units_and_directory_are_checked_in_the_identity_read() -> None:
    path = "/etc/systemd/system/shield-sentinel-26379.service"
    marker = "'# Managed by shield-orchestrator (Pulumi): replaced and removed by its deployment.'"
    assert sentinel_scripts.sentinel_checks([26379]) == (
        f'[ ! -e {path} ] || {{ [ "$(head -n 1 {path} 2>/dev/null)" = {marker} ]'
        f" || grep -q 'Redis Sentinel for shield-orchestrator' {path}; }}"
        f" || conflict redisSentinels '{path} exists and was not made by this deployment;"
        " remove it or list another port in redisSentinels'\n"
        + host_scripts.dir_is_ours("/var/lib/shield-sentinel", sentinel_scripts.SENTINEL_FILES)
        + " || conflict - '/var/lib/shield-sentinel exists and was not made by this deployment;"
        " remove or rename it'\n"
    )
    refusal = (
        host_scripts.dir_is_ours("/var/lib/shield-sentinel", sentinel_scripts.SENTINEL_FILES)
        + " || fail '/var/lib/shield-sentinel exists and was not made by this deployment;"
        " remove or rename it'\n"
    )
    script = sentinel_scripts.sentinel_apply(
        "127.0.10.8", 26379, "shield", ("127.0.10.48", 6379), 2
    )
    assert script.index(refusal) < script.index("install -d -m 0750 -o redis")


HA_CONFIG = {
    **BASE_CONFIG,
    "orchestrators": '[{"host": "127.0.10.8", "bindAddress": "127.0.10.8"}]',
    "workerHosts": '[{"host": "127.0.10.8"}]',
    "redisMode": "sentinel",
    "redisReplicas": '[{"host": "127.0.10.49"}]',
    "redisSentinels": "127.0.10.48:26379,127.0.10.49:26379,127.0.10.8:26379",
}


@pytest.mark.parametrize(
    ("host", "install_dir", "sentinel", "service"),
    [
        pytest.param("127.0.10.8", True, True, True, id="orchestrator and sentinel"),
        pytest.param("127.0.10.48", False, True, False, id="primary: token in Redis"),
        pytest.param("127.0.10.49", True, True, False, id="replica"),
    ],
)
def test_every_host_checks_what_it_writes_before_its_identity_is_read(
    host: str, install_dir: bool, sentinel: bool, service: bool
) -> None:
    config, _ = load(
        config_source(HA_CONFIG, {"sshPrivateKey": SSH_KEY, "redisPassword": REDIS_PASSWORD})
    )
    script = identity_script(config, host, create=True)
    assert script.startswith(host_scripts.HEADER + host_scripts.check_prelude(config.service))
    # Once: from the service's checks on its hosts, on its own elsewhere.
    assert script.count(host_scripts.install_dir_check(config.service)) == int(install_dir)
    assert (sentinel_scripts.sentinel_checks([26379]) in script) == sentinel
    assert ("ports on 127.0.10.8" in script) == service


def test_a_replicas_foreign_install_dir_gets_no_token_and_is_named(tmp_path: Path) -> None:
    service = _service(tmp_path)
    _make(tmp_path / "opt", {"app.py": "theirs\n"})
    script = (
        host_scripts.HEADER
        + host_scripts.check_prelude(service)
        + host_scripts.install_dir_check(service)
        + host_scripts.orchestrator_identity(service.install_dir, create=True)
    )
    identity = parse_identity(_run(script).stdout)
    assert identity.conflicts == (
        ("installDir", f"{tmp_path}/opt {FOREIGN}; set installDir to a free name"),
    )
    assert identity.token == "none"
    assert sorted(path.name for path in (tmp_path / "opt").iterdir()) == ["app.py"]


def test_without_ss_the_port_check_fails_with_one_line_naming_iproute2(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for directory in ("/usr/bin", "/bin"):
        for entry in Path(directory).iterdir():
            link = tools / entry.name
            if entry.name != "ss" and not link.exists():
                link.symlink_to(entry)
    service = _service(tmp_path)
    script = (
        host_scripts.HEADER
        + host_scripts.host_checks("h", service, "127.0.0.1", [8000])
        + host_scripts.orchestrator_identity(service.install_dir, create=True)
    )
    result = _run(script, env={**os.environ, "PATH": str(tools)})
    identity = parse_identity(result.stdout)
    assert identity.conflicts == (
        ("servicePort", "cannot check the ports on h: ss is missing (install iproute2)"),
    )
    assert identity.token == "none"
