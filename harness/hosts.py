"""The lab's hosts over real SSH, with the pinned host keys of this lab (scripts/lab)."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parents[1]
LAB_SCRIPT = REPO_ROOT / "scripts" / "lab"
ORCHESTRATOR = "127.0.10.8"
REDIS_HOST = "127.0.10.48"


class LabCommandFailed(AssertionError):
    """scripts/lab or a command on a lab host failed; an AssertionError, so a test that
    meets it fails rather than errors, and the message holds the command's stderr."""


def _lab(*args: str, timeout_s: float = 600) -> str:
    result = subprocess.run(
        [str(LAB_SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s
    )
    if result.returncode != 0:
        raise LabCommandFailed(f"scripts/lab {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result.stdout


@dataclass(frozen=True)
class Lab:
    ssh_key: Path
    known_hosts: Path
    redis_password: str
    orchestrator_host_key: str
    redis_host_key: str
    # The HA hosts' keys (scripts/lab up-ha), by address; empty when they are not booted.
    ha_host_keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def current(cls) -> Lab:
        """The running lab's facts, as `scripts/lab env` prints them."""
        if subprocess.run([str(LAB_SCRIPT), "status"], capture_output=True).returncode != 0:
            raise LabCommandFailed("the lab is not up: run `make test` (or scripts/lab up)")
        facts: dict[str, str] = {}
        for line in _lab("env").splitlines():
            name, _, value = line.partition("=")
            facts[name] = shlex.split(value)[0]
        return cls(
            ssh_key=Path(facts["LAB_SSH_KEY"]),
            known_hosts=Path(facts["LAB_KNOWN_HOSTS"]),
            redis_password=Path(facts["LAB_REDIS_PASSWORD_FILE"]).read_text().strip(),
            orchestrator_host_key=facts["LAB_ORCHESTRATOR_HOST_KEY"],
            redis_host_key=facts["LAB_REDIS_HOST_KEY"],
            ha_host_keys={
                address: facts[name]
                for address, name in (
                    ("127.0.10.9", "LAB_ORCHESTRATOR2_HOST_KEY"),
                    ("127.0.10.49", "LAB_REPLICA_HOST_KEY"),
                )
                if name in facts
            },
        )

    @classmethod
    def rebuild(cls) -> Lab:
        """Power both hosts off, build them anew (new keys, ids and password), boot them."""
        _lab("down")
        _lab("up")
        return cls.current()

    def host_key(self, host: str) -> str:
        if host in self.ha_host_keys:
            return self.ha_host_keys[host]
        return self.orchestrator_host_key if host == ORCHESTRATOR else self.redis_host_key

    def _options(self) -> list[str]:
        return [
            "-i", str(self.ssh_key),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "ConnectTimeout=5",
        ]  # fmt: skip

    def ssh(
        self, host: str, command: str, stdin: str = "", timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command line on a host."""
        return subprocess.run(
            ["ssh", *self._options(), f"root@{host}", command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def check(self, host: str, command: str, stdin: str = "") -> str:
        result = self.ssh(host, command, stdin)
        if result.returncode != 0:
            raise LabCommandFailed(f"{host}: {command[:200]}\n{result.stderr}")
        return result.stdout

    def rotate_host_key(self, host: str) -> Lab:
        """Give a host a new SSH host key, as a reinstall of sshd would; the lab pins it."""
        new_key = self.check(
            host,
            "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub"
            " && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key"
            " && cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub"
            " && systemctl restart ssh",
        ).strip()
        lines = [
            line
            for line in self.known_hosts.read_text().splitlines()
            if not line.startswith(host + " ")
        ]
        self.known_hosts.write_text("\n".join([*lines, f"{host} {new_key}"]) + "\n")
        return Lab.current()


# The lab stack turns the Redis's default user off (redisDisableDefaultUser): the tests then
# read and clean up as a user of their own with every right, which they make through the
# deploy's user (shield-deploy, same password), as an operator with that password could.
LAB_TESTS_USER = "shield-lab-tests"
# The service users' passwords the lab tests' stacks set (redisApiPassword, ...).
LAB_USER_SECRETS = {"redisApiPassword": "lab-api-3e9c1f", "redisWorkerPassword": "lab-wrk-51a0d7"}


def lab_redis(host: str, password: str) -> redis.Redis:
    """A client with every right on the lab Redis at host: the default user while it is on,
    else LAB_TESTS_USER (made through the deploy's user when missing)."""
    default = redis.Redis(host=host, password=password, decode_responses=True)
    try:
        default.ping()
        return default
    except redis.exceptions.AuthenticationError:
        default.close()
    tests = redis.Redis(
        host=host, username=LAB_TESTS_USER, password=password, decode_responses=True
    )
    try:
        tests.ping()
        return tests
    except redis.exceptions.AuthenticationError:
        pass
    with redis.Redis(
        host=host, username="shield-deploy", password=password, decode_responses=True
    ) as deploy:
        deploy.execute_command(
            "ACL", "SETUSER", LAB_TESTS_USER, "on", f">{password}", "+@all", "~*", "&*"
        )
    return tests


def forget_lab_tests_user(host: str, password: str) -> None:
    """Delete LAB_TESTS_USER, once a destroy turned the default user back on: the lab's
    Redis is left as the tests found it."""
    with lab_redis(host, password) as client:
        client.execute_command("ACL", "DELUSER", LAB_TESTS_USER)
