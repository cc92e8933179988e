"""RedisReplication and RedisSentinel: the data nodes and sentinels of redisMode sentinel."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from infra import scripts, sentinel_scripts
from infra.config import RedisSettings, SshTarget


@dataclass(frozen=True)
class RedisReplicationArgs:
    target: SshTarget
    connection: remote.ConnectionArgs
    # This node's address for redis-cli, and the primary it replicates (None: the primary).
    redis: RedisSettings
    replica_of: tuple[str, int] | None
    password: pulumi.Output[str]
    identity: str
    ready_after: list[pulumi.Resource]


class RedisReplication(pulumi.ComponentResource):
    """masterauth on every data node, `replicaof` the primary on each replica."""

    def __init__(
        self, name: str, args: RedisReplicationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("shield:infra:RedisReplication", name, None, opts)
        script = sentinel_scripts.replication_apply(args.target.host, args.redis, args.replica_of)
        self.setup = remote.Command(
            f"{name}-replication",
            connection=args.connection,
            create=scripts.invocation(scripts.on_host(args.identity, script), args.target.use_sudo),
            stdin=_password_stdin(args.password),
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.ready_after),
        )
        self.register_outputs({})


@dataclass(frozen=True)
class RedisSentinelArgs:
    target: SshTarget
    connection: remote.ConnectionArgs
    host: str
    port: int
    master: str
    primary: tuple[str, int]
    quorum: int
    password: pulumi.Output[str]
    identity: str
    ready_after: list[pulumi.Resource]


class RedisSentinel(pulumi.ComponentResource):
    """One sentinel under systemd, monitoring the master by name."""

    def __init__(
        self, name: str, args: RedisSentinelArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("shield:infra:RedisSentinel", name, None, opts)

        def run(script: str) -> str:
            return scripts.invocation(scripts.on_host(args.identity, script), args.target.use_sudo)

        self.setup = remote.Command(
            f"{name}-setup",
            connection=args.connection,
            create=run(
                sentinel_scripts.sentinel_apply(
                    args.host, args.port, args.master, args.primary, args.quorum
                )
            ),
            delete=run(sentinel_scripts.sentinel_remove(args.port)),
            stdin=_password_stdin(args.password),
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.ready_after),
        )
        self.register_outputs({})


def _stdin_line(value: str) -> str:
    return value + "\n"


def _password_stdin(password: pulumi.Output[str]) -> pulumi.Output[str]:
    line: pulumi.Output[str] = password.apply(_stdin_line)
    return pulumi.Output.secret(line)
