"""What the stack sets on a Redis (infra.redis_access): shellcheck on every script, and the
apply script run for real against a redis-server of its own, including after a restart."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from infra import host_scripts, redis_access
from infra.config import RedisSettings, load
from infra.redis_access import DEPLOY_USER, RedisAccess
from service.core.redis_acl import API_USER, WORKER_USER
from tests.infra.support import BASE_CONFIG, SSH_KEY, config_source

ADMIN_PASSWORD = "admin-secret"
PASSWORDS = {DEPLOY_USER: ADMIN_PASSWORD, API_USER: "api-secret", WORKER_USER: "worker-secret"}
ACCESS = RedisAccess(acl_users=True, disable_default_user=True, maxmemory="64mb")


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(redis_access.access_apply("h", 6379, ACCESS), id="apply step"),
        pytest.param(redis_access.apply_script("h", 6379, ACCESS), id="apply"),
        pytest.param(redis_access.access_remove("h", 6379, ACCESS), id="remove"),
        pytest.param(
            redis_access.access_apply("h", 6379, RedisAccess(maxmemory="1gb")),
            id="apply step, maxmemory only",
        ),
    ],
)
def test_shellcheck_passes(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: run `make deps` (apt shellcheck)")
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", "-"],
        input=script,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_the_unit_follows_the_redis_unit_and_is_ours() -> None:
    assert redis_access.access_unit(ACCESS) == (
        "# Managed by shield-orchestrator (Pulumi): replaced and removed by its deployment.\n"
        "[Unit]\n"
        "Description=shield-orchestrator's Redis users and maxmemory on redis-server.service\n"
        "After=redis-server.service\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        "ExecStart=/bin/bash /etc/shield-redis-access/apply --watch\n"
        "Restart=always\n"
        "RestartSec=2\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def test_no_password_is_in_any_script() -> None:
    scripts = [
        redis_access.access_apply("h", 6379, ACCESS),
        redis_access.access_remove("h", 6379, ACCESS),
    ]
    for password in PASSWORDS.values():
        digest = hashlib.sha256(password.encode()).hexdigest()
        assert all(password not in text and digest not in text for text in scripts)


@pytest.fixture
def admin_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server whose default user has a password, as the lab's has (requirepass)."""
    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()
    with redis.Redis(port=server.port) as client:
        client.config_set("requirepass", ADMIN_PASSWORD)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def access_dir(tmp_path: Path) -> Path:
    """What the apply step keeps on the Redis host: the deploy's password and each user's
    password hash."""
    directory = tmp_path / "access"
    directory.mkdir()
    (directory / "deploy-password").write_text(ADMIN_PASSWORD)
    for user, password in PASSWORDS.items():
        (directory / f"{user}.sha256").write_text(hashlib.sha256(password.encode()).hexdigest())
    return directory


def run_apply(server: RedisServer, directory: Path, *args: str) -> subprocess.Popen[str]:
    script = redis_access.apply_script("127.0.0.1", server.port, ACCESS, str(directory))
    return subprocess.Popen(
        ["bash", "-c", script, "apply", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def as_user(server: RedisServer, user: str, password: str) -> redis.Redis:
    return redis.Redis(port=server.port, username=user, password=password, decode_responses=True)


def applied(server: RedisServer) -> bool:
    """Every user works with its password, and the default user is off."""
    for user, password in PASSWORDS.items():
        try:
            with as_user(server, user, password) as client:
                client.ping()
        except redis.exceptions.RedisError:
            return False
    try:
        with as_user(server, "default", ADMIN_PASSWORD) as client:
            client.ping()
    except redis.exceptions.AuthenticationError:
        return True
    return False


def test_apply_sets_the_users_turns_the_default_user_off_and_limits_memory(
    admin_redis: RedisServer, access_dir: Path
) -> None:
    for _ in range(2):  # the second run is as the deploy user, and changes nothing
        process = run_apply(admin_redis, access_dir)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert output.strip().endswith("applied")
    assert applied(admin_redis)
    with as_user(admin_redis, DEPLOY_USER, ADMIN_PASSWORD) as deploy:
        assert deploy.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
        assert deploy.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        with pytest.raises(redis.exceptions.NoPermissionError):
            deploy.flushall()
    with as_user(admin_redis, API_USER, PASSWORDS[API_USER]) as api:
        api.xadd("shield:events", {"type": "a"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            api.set("elsewhere", "x")


def test_the_watcher_applies_again_after_redis_restarts(
    admin_redis: RedisServer, access_dir: Path
) -> None:
    watcher = run_apply(admin_redis, access_dir, "--watch")
    try:
        wait_until(lambda: applied(admin_redis), 30, describe="the first apply")
        # A restart forgets every runtime setting: users, the default user's state, maxmemory;
        # the default user gets its password back (requirepass in the lab's redis.conf).
        admin_redis.restart()
        with redis.Redis(port=admin_redis.port) as client:
            client.config_set("requirepass", ADMIN_PASSWORD)
        wait_until(lambda: applied(admin_redis), 30, describe="the watcher to apply again")
        with as_user(admin_redis, DEPLOY_USER, ADMIN_PASSWORD) as deploy:
            assert deploy.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        watcher.terminate()
        output, _ = watcher.communicate(timeout=10)
    assert "applied again: Redis restarted" in output


def deploy_view(server: RedisServer) -> RedisSettings:
    """The stack's view of this Redis, with ACL users: its scripts' redis-cli prelude."""
    config, _ = load(
        config_source(
            {**BASE_CONFIG, "redisHost": "127.0.0.1", "redisPort": str(server.port)},
            {"sshPrivateKey": SSH_KEY},
        )
    )
    return dataclasses.replace(config.redis, access=ACCESS)


def test_the_deploys_scripts_work_as_its_own_user_once_the_default_user_is_off(
    admin_redis: RedisServer, access_dir: Path
) -> None:
    view = deploy_view(admin_redis)
    # Before apply, as the default user; after it, as shield-deploy.
    for _ in range(2):
        groups = subprocess.run(
            ["bash", "-c", host_scripts.redis_groups("h", view)],
            input=ADMIN_PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert groups.returncode == 0, groups.stderr
        assert "lightrag-workers" in groups.stdout.strip().splitlines()[-1]
        process = run_apply(admin_redis, access_dir)
        assert process.wait(timeout=60) == 0
    identity = subprocess.run(
        ["bash", "-c", host_scripts.redis_identity("h", view, create=True)],
        input=ADMIN_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert identity.returncode == 0, identity.stderr
    assert re.search(r"^token [0-9a-f]{32}$", identity.stdout, re.MULTILINE), identity.stdout
    assert "info role:master" in identity.stdout


def test_shellcheck_passes_on_the_prelude_with_acl_users(admin_redis: RedisServer) -> None:
    test_shellcheck_passes(host_scripts.redis_groups("h", deploy_view(admin_redis)))
