"""RedisStreams: check Redis on its host, then create both streams and all consumer groups."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from infra import scripts
from infra.config import RedisSettings, SshTarget


@dataclass(frozen=True)
class RedisStreamsArgs:
    target: SshTarget
    connection: remote.ConnectionArgs
    redis: RedisSettings
    password: pulumi.Output[str] | None
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
        child = pulumi.ResourceOptions(parent=self)

        def run(script: str) -> str:
            return scripts.invocation(scripts.on_host(args.identity, script), args.target.use_sudo)

        # Redis reads the password from stdin, so it is on no command line; empty means none.
        password_stdin: pulumi.Output[str] | None = None
        if args.password is not None:
            password_stdin = pulumi.Output.secret(args.password.apply(_stdin_line))
        self.preflight = remote.Command(
            f"{name}-preflight",
            connection=args.connection,
            create=run(
                scripts.redis_preflight(args.target.host, args.redis, args.install_os_packages)
            ),
            stdin=password_stdin,
            add_previous_output_in_env=False,
            opts=child,
        )
        # Without a delete line, destroy keeps the data and never dials the host.
        delete = (
            run(scripts.redis_drop(args.target.host, args.redis)) if args.drop_on_destroy else None
        )
        self.group_setup = remote.Command(
            f"{name}-groups",
            connection=args.connection,
            create=run(scripts.redis_groups(args.target.host, args.redis)),
            delete=delete,
            stdin=password_stdin,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.preflight]),
        )
        self.groups = self.group_setup.stdout.apply(_parse_groups)
        self.register_outputs({"groups": self.groups})


def _stdin_line(value: str) -> str:
    return value + "\n"


def _parse_groups(stdout: str | None) -> dict[str, list[str]]:
    if not stdout:
        return {}
    last_line = stdout.strip().splitlines()[-1]
    parsed: dict[str, list[str]] = json.loads(last_line)
    return parsed
