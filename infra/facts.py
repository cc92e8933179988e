"""Each host's identity, read over SSH when the program runs, before any step (like Ansible facts).

Every step on a host carries that identity in its script or its copy path. A host that was
reinstalled (a new /etc/machine-id) or lost the deployment's files (a new install token) thus
changes every step on it, and one `pulumi up` runs them all again. It is an update, never a
replace, so no step runs a delete with the connection of the host that is gone.

The token is created by the first read and kept where the deployment lives (a file in the
install directory, a key in Redis), so the identity stays the same from one run to the next
until the host loses that state.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pulumi

from infra import host_scripts
from infra.artifacts import digest_text
from infra.config import Bastion, SshTarget

SSH_TIMEOUT_S = 60


class HostUnreachable(pulumi.RunError):
    """A host's identity could not be read; the message names the host and the cause."""


class HostConflict(pulumi.RunError):
    """Something we did not make sits at our names or ports; one line each, naming the path
    (or port) and the stack key to change."""

    @classmethod
    def of(cls, host: str, conflicts: tuple[tuple[str, str], ...]) -> HostConflict:
        return cls(
            "\n".join(f"shield-orchestrator: host {host}: {message}" for _, message in conflicts)
        )


@dataclass(frozen=True)
class HostIdentity:
    """What makes one host, as installed, this host."""

    machine_id: str
    token: str
    # `info key:value` lines (a Redis node's INFO replication); not part of the identity.
    info: tuple[tuple[str, str], ...] = ()
    # `conflict <stack key> <message>` lines: what at our names or ports is not ours.
    conflicts: tuple[tuple[str, str], ...] = ()

    @property
    def digest(self) -> str:
        return digest_text(self.machine_id, self.token)


@dataclass(frozen=True)
class SshCredentials:
    """The plain private keys, only ever written to a private temporary file."""

    private_key: str
    bastion_private_key: str | None = None

    def __repr__(self) -> str:
        return "SshCredentials(***)"


def parse_identity(stdout: str) -> HostIdentity:
    """`machine-id X` and `token Y` lines into a HostIdentity."""
    fields: dict[str, str] = {}
    info: list[tuple[str, str]] = []
    conflicts: list[tuple[str, str]] = []
    for line in stdout.splitlines():
        key, _, value = line.strip().partition(" ")
        if key in ("machine-id", "token") and value:
            fields[key] = value
        elif key == "info" and ":" in value:
            name, _, item = value.partition(":")
            info.append((name, item))
        elif key == "conflict" and " " in value:
            setting, _, message = value.partition(" ")
            conflicts.append((setting, message))
    if set(fields) != {"machine-id", "token"}:
        raise ValueError(f"unexpected identity output: {stdout.strip()[:200]!r}")
    return HostIdentity(fields["machine-id"], fields["token"], tuple(info), tuple(conflicts))


def parse_info(stdout: str) -> tuple[tuple[str, str], ...]:
    """`info key:value` lines into (key, value) pairs."""
    return parse_identity("machine-id -\ntoken -\n" + stdout).info


def known_hosts_line(host: str, port: int, host_key: str) -> str:
    """One known_hosts line pinning host_key for host:port."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {host_key}\n"


def ssh_command(
    target: SshTarget, workdir: Path, bastion: Bastion | None, command: str
) -> list[str]:
    """The ssh argv that runs command on target with the keys and known_hosts in workdir."""
    pins = [known_hosts_line(target.host, target.port, target.host_key)] if target.host_key else []
    options = _options(workdir / "key", pins, workdir / "known_hosts")
    if bastion is not None:
        bastion_pins = (
            [known_hosts_line(bastion.host, bastion.port, bastion.host_key)]
            if bastion.host_key
            else []
        )
        key = workdir / ("bastion_key" if (workdir / "bastion_key").exists() else "key")
        proxy = [
            "ssh",
            *_options(key, bastion_pins, workdir / "bastion_known_hosts"),
            "-p", str(bastion.port), "-W", "%h:%p", f"{bastion.user}@{bastion.host}",
        ]  # fmt: skip
        options += ["-o", "ProxyCommand=" + " ".join(host_scripts.q(part) for part in proxy)]
    return ["ssh", *options, "-p", str(target.port), f"{target.user}@{target.host}", command]


def _options(key: Path, pins: list[str], known_hosts: Path) -> list[str]:
    if pins:
        known_hosts.write_text("".join(pins))
        checking = ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
    else:
        checking = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return [
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR",
        *checking,
    ]  # fmt: skip


def run_script(
    role: str,
    target: SshTarget,
    credentials: SshCredentials,
    script: str,
    bastion: Bastion | None = None,
    stdin: str = "",
) -> str:
    """Run a read-only script on target over SSH; its stdout, or HostUnreachable."""
    with tempfile.TemporaryDirectory(prefix="shield-facts-") as directory:
        workdir = Path(directory)
        _write_private(workdir / "key", credentials.private_key)
        if credentials.bastion_private_key is not None:
            _write_private(workdir / "bastion_key", credentials.bastion_private_key)
        invocation = host_scripts.invocation(script, target.use_sudo)
        command = ssh_command(target, workdir, bastion, invocation)
        try:
            result = subprocess.run(
                command, input=stdin, capture_output=True, text=True, timeout=SSH_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise _unreachable(role, target, f"no answer within {SSH_TIMEOUT_S}s") from None
    if result.returncode != 0:
        raise _unreachable(role, target, _cause(target, result.stderr))
    return result.stdout


def read_identity(
    role: str,
    target: SshTarget,
    credentials: SshCredentials,
    script: str,
    bastion: Bastion | None = None,
    stdin: str = "",
) -> HostIdentity:
    """Run the identity script on target over SSH and parse what it prints."""
    stdout = run_script(role, target, credentials, script, bastion, stdin)
    try:
        return parse_identity(stdout)
    except ValueError as error:
        raise _unreachable(role, target, str(error)) from None


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text if text.endswith("\n") else text + "\n")


def _cause(target: SshTarget, stderr: str) -> str:
    if "Host key verification failed" in stderr or "HOST IDENTIFICATION HAS CHANGED" in stderr:
        return f"its SSH host key does not match {target.pin_hint} (was the host rebuilt?)"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "ssh failed with no message"


def _unreachable(role: str, target: SshTarget, cause: str) -> HostUnreachable:
    return HostUnreachable(
        f"shield-orchestrator: host {target.host} ({role}): cannot read its identity"
        f" over SSH as {target.user}@{target.host}:{target.port}: {cause}"
    )
