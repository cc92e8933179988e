"""RedisReplication and RedisSentinel: the data nodes and sentinels of redisMode sentinel."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from infra import sentinel_scripts
from infra.components.steps import HostSteps, secret_stdin
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
        steps = HostSteps(name, self, args.connection, args.identity, args.target.use_sudo)
        self.setup = steps.command(
            "replication",
            sentinel_scripts.replication_apply(args.target.host, args.redis, args.replica_of),
            stdin=secret_stdin(args.password),
            after=args.ready_after,
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
        steps = HostSteps(name, self, args.connection, args.identity, args.target.use_sudo)
        self.setup = steps.command(
            "setup",
            sentinel_scripts.sentinel_apply(
                args.host, args.port, args.master, args.primary, args.quorum
            ),
            delete=sentinel_scripts.sentinel_remove(args.port),
            stdin=secret_stdin(args.password),
            after=args.ready_after,
        )
        self.register_outputs({})
