"""The stack's Redis users and memory (redisApiPassword, redisWorkerPassword,
redisDisableDefaultUser, redisMaxmemory) in the resource graph, under Pulumi's mocks."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from infra.config import StackConfigError, load
from tests.infra.support import (
    BASE_CONFIG,
    REDIS_PASSWORD,
    SSH_KEY,
    ProgramRun,
    config_source,
    plain_strings,
    run_program,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
API_PASSWORD = "api-pass-31c7a"
WORKER_PASSWORD = "worker-pass-8e1d0"
SECRETS = {
    "sshPrivateKey": SSH_KEY,
    "redisPassword": REDIS_PASSWORD,
    "redisApiPassword": API_PASSWORD,
    "redisWorkerPassword": WORKER_PASSWORD,
}
STACK = {**BASE_CONFIG, "redisDisableDefaultUser": "true", "redisMaxmemory": "256MB"}


@pytest.fixture
def source_root(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(
        REPO_ROOT / "service", root / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


@pytest.fixture
def run(tmp_path: Path, source_root: Path) -> ProgramRun:
    return run_program(STACK, tmp_path / "build", source_root, secrets=SECRETS)


def script(run: ProgramRun, name: str, field: str = "create") -> str:
    return shlex.split(str(run.registered[name].inputs[field]))[-1]


def test_the_access_step_runs_before_the_groups_and_gets_every_password_on_stdin(
    run: ProgramRun,
) -> None:
    assert run.depends_on("redis-access", "redis-preflight")
    assert run.depends_on("redis-groups", "redis-access")
    stdin = run.registered["redis-access"].raw["stdin"]
    assert stdin["value"] == f"{REDIS_PASSWORD}\n{API_PASSWORD}\n{WORKER_PASSWORD}\n"
    created = script(run, "redis-access")
    assert "setuser shield-api " in created and "setuser shield-worker " in created
    assert "rcli ACL SETUSER default off" in created
    assert "rcli CONFIG SET maxmemory 256mb" in created
    assert "ACL DELUSER shield-api shield-worker" in script(run, "redis-access", "delete")


def test_the_service_connects_as_its_users_and_the_deploy_as_its_own(run: ProgramRun) -> None:
    env = run.registered["orchestrator-units"].raw["stdin"]["value"]
    assert 'SHIELD_REDIS_USERNAME="shield-api"\n' in env
    assert f'SHIELD_REDIS_PASSWORD="{API_PASSWORD}"\n' in env
    assert 'SHIELD_REDIS_WORKER_USERNAME="shield-worker"\n' in env
    assert f'SHIELD_REDIS_WORKER_PASSWORD="{WORKER_PASSWORD}"\n' in env
    assert REDIS_PASSWORD not in env
    assert run.registered["redis-groups"].raw["stdin"]["value"] == REDIS_PASSWORD + "\n"
    assert "--user shield-deploy" in script(run, "redis-groups")


def test_no_password_is_in_plain_text_anywhere(run: ProgramRun) -> None:
    leaks = [
        (name, text)
        for name, item in run.registered.items()
        for text in plain_strings(item.raw)
        for secret in SECRETS.values()
        if secret.strip() in text
    ]
    assert leaks == []


def test_without_users_or_maxmemory_the_redis_is_left_as_it_is(
    tmp_path: Path, source_root: Path
) -> None:
    plain = run_program(BASE_CONFIG, tmp_path / "build", source_root)
    assert "redis-access" not in plain.registered
    assert "--user" not in script(plain, "redis-groups")


@pytest.mark.parametrize(
    ("stack", "secrets", "message"),
    [
        pytest.param(
            BASE_CONFIG,
            {"redisPassword": REDIS_PASSWORD, "redisApiPassword": API_PASSWORD},
            "shield-orchestrator:redisWorkerPassword: is required with the other",
            id="one user's password",
        ),
        pytest.param(
            BASE_CONFIG,
            {"redisApiPassword": API_PASSWORD, "redisWorkerPassword": WORKER_PASSWORD},
            "shield-orchestrator:redisPassword: is required to create the ACL users",
            id="no deploy password",
        ),
        pytest.param(
            {**BASE_CONFIG, "redisDisableDefaultUser": "true"},
            {"redisPassword": REDIS_PASSWORD},
            "shield-orchestrator:redisDisableDefaultUser: needs redisApiPassword",
            id="default user off without users",
        ),
        pytest.param(
            {**BASE_CONFIG, "redisMaxmemory": "lots"},
            {"redisPassword": REDIS_PASSWORD},
            "shield-orchestrator:redisMaxmemory: invalid value 'lots'",
            id="maxmemory not a size",
        ),
        pytest.param(
            {**BASE_CONFIG, "redisMaxmemory": "1gb"},
            {},
            "shield-orchestrator:redisPassword: is required to set redisMaxmemory",
            id="maxmemory without a password",
        ),
        pytest.param(
            {**BASE_CONFIG, "redisUsername": "someone"},
            {},
            None,
            id="redisUsername is not a key: the stack derives it",
        ),
    ],
)
def test_bad_combinations_name_the_key(
    stack: dict[str, str], secrets: dict[str, str], message: str | None
) -> None:
    source = config_source(stack, {"sshPrivateKey": SSH_KEY, **secrets})
    if message is None:
        config, _ = load(source)
        assert config.app.redis_username is None
        return
    with pytest.raises(StackConfigError) as error:
        load(source)
    assert str(error.value).startswith(message)


def test_sentinel_mode_refuses_acl_users_and_says_why() -> None:
    stack = {
        **BASE_CONFIG,
        "redisMode": "sentinel",
        "redisReplicas": '[{"host": "127.0.10.49"}]',
        "redisSentinels": "127.0.10.48:26379,127.0.10.49:26379,127.0.10.8:26379",
    }
    with pytest.raises(StackConfigError) as error:
        load(config_source(stack, SECRETS))
    assert str(error.value).startswith(
        "shield-orchestrator:redisApiPassword: ACL users are not supported with redisMode sentinel"
    )
