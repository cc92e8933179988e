"""Composing the stack: artifacts, both components, and the outputs users read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import remote

from infra.artifacts import REPO_ROOT, build_release, build_wheelhouse
from infra.components.redis_ha import (
    RedisReplication,
    RedisReplicationArgs,
    RedisSentinel,
    RedisSentinelArgs,
)
from infra.components.redis_streams import RedisStreams, RedisStreamsArgs
from infra.components.service_deployment import ServiceDeployment, ServiceDeploymentArgs
from infra.config import SshTarget, StackConfig, StackConfigError, StackSecrets
from infra.connection import ssh_connection, warn_if_unpinned

REQUIREMENTS = Path("service") / "requirements.txt"


@dataclass(frozen=True)
class Deployed:
    streams: RedisStreams
    # The first orchestrator host's deployment, then every other host's.
    service: ServiceDeployment
    services: tuple[ServiceDeployment, ...] = ()
    replication: tuple[RedisReplication, ...] = ()
    sentinels: tuple[RedisSentinel, ...] = ()


@dataclass(frozen=True)
class Identities:
    """Each host's identity digest (infra.facts), read before any step runs."""

    orchestrator: str
    redis: str
    # Every other host's digest by address; a host that is also the orchestrator or the
    # Redis host has one identity.
    by_host: dict[str, str] = field(default_factory=dict)
    # Each Redis node's INFO replication fields, as read with its identity.
    redis_nodes: dict[str, dict[str, str]] = field(default_factory=dict)

    def of(self, config: StackConfig, host: str) -> str:
        if host == config.orchestrator.host:
            return self.orchestrator
        if host == config.redis_host.host:
            return self.redis
        return self.by_host[host]


def warn_about_unpinned_hosts(config: StackConfig) -> None:
    """Preview says so for each host whose SSH key is not pinned."""
    warn_if_unpinned("orchestrator", config.orchestrator)
    warn_if_unpinned("redis", config.redis_host)
    seen = {config.orchestrator.host, config.redis_host.host}
    for target in other_hosts(config):
        if target.host not in seen and target.host_key is None:
            pulumi.log.warn(
                f"host {target.host}: its SSH host key is not pinned, so any key is accepted;"
                " set hostKey in its entry to the line from ssh-keyscan"
            )
        seen.add(target.host)
    if config.bastion is not None:
        warn_if_unpinned("bastion", config.bastion)


def deploy(
    config: StackConfig,
    secrets: StackSecrets,
    identities: Identities,
    build_dir: Path,
    source_root: Path = REPO_ROOT,
) -> Deployed:
    """Create the resources of both hosts, in order: groups before the service starts."""
    requirements = source_root / REQUIREMENTS
    release = build_release(build_dir, source_root)
    wheelhouse = None
    if config.packages.source == "wheelhouse":
        wheelhouse = build_wheelhouse(
            build_dir, requirements, config.packages.python_version, config.packages.platforms
        )

    def connect(target: SshTarget) -> remote.ConnectionArgs:
        return ssh_connection(
            target, secrets.ssh_private_key, config.bastion, secrets.bastion_private_key
        )

    topology = config.topology
    replication: list[RedisReplication] = []
    sentinels: list[RedisSentinel] = []
    if topology.mode == "sentinel":
        password = secrets.redis_password
        if password is None:
            raise StackConfigError("shield-orchestrator:redisPassword: sentinel mode needs it")
        primary = RedisReplication(
            "redis-primary",
            RedisReplicationArgs(
                target=config.redis_host,
                connection=connect(config.redis_host),
                redis=config.redis,
                replica_of=None,
                password=password,
                identity=identities.redis,
                ready_after=[],
            ),
        )
        replication.append(primary)
        for node in topology.replicas:
            replication.append(
                RedisReplication(
                    node.name,
                    RedisReplicationArgs(
                        target=node.target,
                        connection=connect(node.target),
                        redis=dataclasses.replace(config.redis, host=node.host, port=node.port),
                        replica_of=node.replica_of,
                        password=password,
                        identity=identities.of(config, node.host),
                        ready_after=[primary.setup],
                    ),
                )
            )
        for sentinel in topology.sentinels:
            sentinels.append(
                RedisSentinel(
                    sentinel.name,
                    RedisSentinelArgs(
                        target=sentinel.target,
                        connection=connect(sentinel.target),
                        host=sentinel.host,
                        port=sentinel.port,
                        master=topology.sentinel_master,
                        primary=(config.redis.host, config.redis.port),
                        quorum=topology.sentinel_quorum,
                        password=password,
                        identity=identities.of(config, sentinel.host),
                        ready_after=[item.setup for item in replication],
                    ),
                )
            )

    streams = RedisStreams(
        "redis",
        RedisStreamsArgs(
            target=config.redis_host,
            connection=connect(config.redis_host),
            redis=config.redis,
            password=secrets.redis_password,
            install_os_packages=config.install_os_packages,
            drop_on_destroy=config.drop_streams_on_destroy,
            identity=identities.redis,
        ),
    )
    ready: list[pulumi.Resource] = [streams.group_setup, *(item.setup for item in sentinels)]
    services = []
    for host in topology.app_hosts:
        services.append(
            ServiceDeployment(
                host.name,
                ServiceDeploymentArgs(
                    target=host.target,
                    host=host,
                    connection=connect(host.target),
                    service=config.service,
                    redis=config.redis,
                    packages=config.packages,
                    requirements=requirements.read_text(),
                    release=release,
                    wheelhouse=wheelhouse,
                    redis_password=secrets.redis_password,
                    api_token=secrets.api_token,
                    install_os_packages=config.install_os_packages,
                    ready_after=ready,
                    identity=identities.of(config, host.target.host),
                ),
            )
        )
    return Deployed(streams, services[0], tuple(services), tuple(replication), tuple(sentinels))


def other_hosts(config: StackConfig) -> list[SshTarget]:
    """Every host of the topology (some may be the orchestrator or the Redis host)."""
    topology = config.topology
    return [
        *(host.target for host in topology.app_hosts),
        *(node.target for node in topology.replicas),
        *(sentinel.target for sentinel in topology.sentinels),
    ]


def endpoints(config: StackConfig) -> dict[str, str]:
    """The URLs users and UIs connect to."""
    base = config.service.base_url
    return {
        "sse_url": f"{base}/events/stream",
        "ws_url": base.replace("http://", "ws://", 1) + "/events/ws",
        "stats_url": f"{base}/events/stats",
        "health_url": f"{base}/health/detailed",
        "metrics_url": f"{base}/metrics",
    }


def api_endpoints(config: StackConfig) -> list[str]:
    """The base URL of every API process, on every orchestrator host."""
    return [url for host in config.topology.app_hosts for url in host.base_urls]


def redis_nodes(config: StackConfig, identities: Identities) -> dict[str, dict[str, Any]]:
    """Each Redis node's role and replication offset (a replica's lag behind its primary's
    offset, in bytes), as read over SSH when this run started."""
    nodes: dict[str, dict[str, Any]] = {}
    for host, info in identities.redis_nodes.items():
        node: dict[str, Any] = {"role": info.get("role", "unknown")}
        if "master_repl_offset" in info:
            node["offset"] = int(info["master_repl_offset"])
        if info.get("role") == "slave":
            node["primary"] = f"{info.get('master_host')}:{info.get('master_port')}"
            node["link"] = info.get("master_link_status", "unknown")
        nodes[host] = node
    primaries = [node for node in nodes.values() if node["role"] == "master"]
    for node in nodes.values():
        if node["role"] == "slave" and len(primaries) == 1 and "offset" in node:
            node["lag_bytes"] = max(0, primaries[0].get("offset", 0) - node["offset"])
    return nodes


def current_primary(config: StackConfig, identities: Identities) -> str | None:
    """The node that says it is the primary (single mode: the Redis host)."""
    found = [
        f"{host}:{config.redis.port}"
        for host, info in identities.redis_nodes.items()
        if info.get("role") == "master"
    ]
    if config.topology.mode == "single":
        return config.redis.address
    return found[0] if len(found) == 1 else None


def outputs(
    config: StackConfig, deployed: Deployed, identities: Identities | None = None
) -> dict[str, Any]:
    """Everything exported from the stack."""
    result: dict[str, Any] = {
        "endpoints": endpoints(config),
        "apiEndpoints": api_endpoints(config),
        "redisAddress": config.redis.address,
        "streamHealth": deployed.service.health,
        "consumerGroups": deployed.streams.groups,
    }
    if identities is not None:
        result["redisNodes"] = redis_nodes(config, identities)
        result["currentPrimary"] = current_primary(config, identities)
    return result
