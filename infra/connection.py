"""SSH connection arguments for pulumi-command, from the validated stack config."""

from __future__ import annotations

import pulumi
from pulumi_command import remote

from infra.config import Bastion, SshTarget


def ssh_connection(
    target: SshTarget,
    private_key: pulumi.Output[str],
    bastion: Bastion | None = None,
    bastion_key: pulumi.Output[str] | None = None,
) -> remote.ConnectionArgs:
    """ConnectionArgs with the key as a secret, the host key pinned when given, and the proxy."""
    proxy = None
    if bastion is not None:
        proxy = remote.ProxyConnectionArgs(
            host=bastion.host,
            port=bastion.port,
            user=bastion.user,
            private_key=pulumi.Output.secret(bastion_key or private_key),
            host_key=bastion.host_key,
        )
    return remote.ConnectionArgs(
        host=target.host,
        port=target.port,
        user=target.user,
        private_key=pulumi.Output.secret(private_key),
        host_key=target.host_key,
        proxy=proxy,
        dial_error_limit=5,
        per_dial_timeout=15,
    )


def warn_if_unpinned(role: str, target: SshTarget | Bastion) -> None:
    """Preview says so when a host's key is not pinned."""
    if target.host_key is None:
        pulumi.log.warn(
            f"{role} host {target.host}: its SSH host key is not pinned, so any key is accepted;"
            f" set {role}HostKey to the line from ssh-keyscan"
        )
