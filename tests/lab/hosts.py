"""The lab's hosts over real SSH, with the pinned host keys of this lab."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ORCHESTRATOR = "127.0.10.8"
REDIS_HOST = "127.0.10.48"


@dataclass(frozen=True)
class Lab:
    ssh_key: Path
    known_hosts: Path
    redis_password: str
    orchestrator_host_key: str
    redis_host_key: str

    @classmethod
    def from_environment(cls) -> Lab:
        names = [
            "LAB_SSH_KEY",
            "LAB_KNOWN_HOSTS",
            "LAB_REDIS_PASSWORD_FILE",
            "LAB_ORCHESTRATOR_HOST_KEY",
            "LAB_REDIS_HOST_KEY",
        ]
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            pytest.fail(f"the lab is not up ({', '.join(missing)} unset): run `make test`")
        return cls(
            ssh_key=Path(os.environ["LAB_SSH_KEY"]),
            known_hosts=Path(os.environ["LAB_KNOWN_HOSTS"]),
            redis_password=Path(os.environ["LAB_REDIS_PASSWORD_FILE"]).read_text().strip(),
            orchestrator_host_key=os.environ["LAB_ORCHESTRATOR_HOST_KEY"],
            redis_host_key=os.environ["LAB_REDIS_HOST_KEY"],
        )

    def _options(self) -> list[str]:
        return [
            "-i", str(self.ssh_key),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "ConnectTimeout=5",
        ]  # fmt: skip

    def ssh(
        self, host: str, command: str, stdin: str = "", timeout_s: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a command line on a host, as pulumi-command does: one session, stdin attached."""
        return subprocess.run(
            ["ssh", *self._options(), f"root@{host}", command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def check(self, host: str, command: str, stdin: str = "") -> str:
        result = self.ssh(host, command, stdin)
        assert result.returncode == 0, f"{host}: {command[:200]}\n{result.stderr}"
        return result.stdout

    def copy(self, host: str, local: Path, remote: str) -> None:
        result = subprocess.run(
            ["scp", "-q", *self._options(), str(local), f"root@{host}:{remote}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
