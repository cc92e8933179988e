"""RedisStreams: check Redis on its host, then create both streams and all consumer groups."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from infra import host_scripts, redis_access
from infra.components.steps import HostSteps, secret_stdin
from infra.config import RedisNode, RedisSettings


@dataclass(frozen=True)
class RedisStreamsArgs:
    node: RedisNode
    connection: remote.ConnectionArgs
    redis: RedisSettings
    password: pulumi.Output[str] | None
    # The service users' passwords (API's, then workers'), when the stack has ACL users.
    user_passwords: tuple[pulumi.Output[str], ...]
    install_os_packages: bool
    drop_on_destroy: bool
    # The host's identity digest (infra.facts): a rebuilt host runs every step again.
    identity: str


class RedisStreams(pulumi.ComponentResource):
    """The streams and groups are data: destroy keeps them unless drop_on_destroy is set."""

    groups: pulumi.Output[dict[str, list[str]]]

    def __init__(
        self, name: str, args: RedisStreamsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("shield:infra:RedisStreams", name, None, opts)
        steps = HostSteps(name, self, args.connection, args.identity, args.node.target.use_sudo)
        host = args.node.target.host
        # Redis reads the password from stdin, so it is on no command line; empty means none.
        password = secret_stdin(args.password)
        self.preflight = steps.command(
            "preflight",
            host_scripts.redis_preflight(host, args.redis, args.install_os_packages),
            stdin=password,
        )
        ready: list[pulumi.Resource] = [self.preflight]
        access = args.redis.access
        if access.enabled:
            # Users and maxmemory before the groups, so the service's users exist before
            # any service starts; the deploy's password first, then each user's.
            self.access = steps.command(
                "access",
                redis_access.access_apply(host, args.redis.port, access),
                delete=redis_access.access_remove(host, args.redis.port, access),
                stdin=_lines(args.password, *args.user_passwords),
                after=[self.preflight],
            )
            ready = [self.access]
        # Without a delete line, destroy keeps the data and never dials the host.
        self.group_setup = steps.command(
            "groups",
            host_scripts.redis_groups(host, args.redis),
            delete=host_scripts.redis_drop(host, args.redis) if args.drop_on_destroy else None,
            stdin=password,
            after=ready,
        )
        self.groups = self.group_setup.stdout.apply(_parse_groups)
        self.register_outputs({"groups": self.groups})


def _lines(*secrets: pulumi.Output[str] | None) -> pulumi.Output[str]:
    """Secrets as lines of standard input, still secret (a missing one is an empty line)."""
    values = [secret if secret is not None else "" for secret in secrets]
    joined = pulumi.Output.all(*values).apply(lambda texts: "".join(f"{t}\n" for t in texts))
    return pulumi.Output.secret(joined)


def _parse_groups(stdout: str | None) -> dict[str, list[str]]:
    if not stdout:
        return {}
    last_line = stdout.strip().splitlines()[-1]
    parsed: dict[str, list[str]] = json.loads(last_line)
    return parsed
