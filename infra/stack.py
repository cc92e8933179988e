"""Composing the stack: artifacts, the components of every host, and the outputs users read."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import remote

from infra.artifacts import REPO_ROOT, Artifacts, build_release, build_wheelhouse
from infra.components.edge_proxy import EdgeProxy, EdgeProxyArgs
from infra.components.redis_ha import (
    RedisReplication,
    RedisReplicationArgs,
    RedisSentinel,
    RedisSentinelArgs,
)
from infra.components.redis_streams import RedisStreams, RedisStreamsArgs
from infra.components.service_deployment import ServiceDeployment, ServiceDeploymentArgs
from infra.config import SshTarget, StackConfig, StackConfigError, StackSecrets
from infra.connection import ssh_connection

# Every package the service needs on its hosts, pinned with its hashes (make lock).
REQUIREMENTS = Path("service") / "requirements.lock"


@dataclass(frozen=True)
class Deployed:
    streams: RedisStreams
    # One per app host, in the order of the stack's lists (API hosts first).
    services: tuple[ServiceDeployment, ...]
    replication: tuple[RedisReplication, ...] = ()
    sentinels: tuple[RedisSentinel, ...] = ()
    # The TLS front of each API host (edgeProxy nginx).
    edges: tuple[EdgeProxy, ...] = ()

    def settled(self) -> pulumi.Output[list[Any]]:
        """Resolves once every step of this run has finished (each step's stdout)."""
        steps: list[pulumi.Output[Any]] = [self.streams.groups]
        for service in self.services:
            steps += [service.units.stdout, service.health]
            steps += [instance.stdout for instance in service.instances.values()]
        steps += [item.setup.stdout for item in self.replication]
        steps += [item.setup.stdout for item in self.sentinels]
        steps += [item.apply.stdout for item in self.edges]
        return pulumi.Output.all(*steps)

    @property
    def health(self) -> pulumi.Output[dict[str, Any]]:
        """The first API process's /health/detailed, as the update left it."""
        for service in self.services:
            if service.serves_api:
                return service.health
        return pulumi.Output.from_input({})


@dataclass(frozen=True)
class Identities:
    """Each host's identity digest (infra.facts) by address, read before any step runs."""

    by_host: dict[str, str]
    # Each Redis node's INFO replication fields, as read with its identity.
    redis_nodes: dict[str, dict[str, str]] = field(default_factory=dict)

    def of(self, host: str) -> str:
        return self.by_host[host]


def warn_about_unpinned_hosts(config: StackConfig) -> None:
    """Preview says so for each host whose SSH key is not pinned."""
    topology = config.topology
    for address, target in topology.hosts().items():
        if target.host_key is None:
            pulumi.log.warn(
                f"host {address} ({', '.join(topology.roles(address))}): its SSH host key is"
                f" not pinned, so any key is accepted; set {target.pin_hint} to the line from"
                " ssh-keyscan"
            )
    if config.bastion is not None and config.bastion.host_key is None:
        pulumi.log.warn(
            f"bastion host {config.bastion.host}: its SSH host key is not pinned, so any key"
            " is accepted; set bastionHostKey to the line from ssh-keyscan"
        )


def build_artifacts(config: StackConfig, build_dir: Path, source_root: Path) -> Artifacts:
    """The release tarball (with a handler directory), the requirements (with the handler's),
    and (packageSource wheelhouse) their wheels (with a handler wheel)."""
    handler = config.handler
    requirements = (source_root / REQUIREMENTS).read_text()
    if handler.requirement_lines:
        requirements = (
            requirements.rstrip("\n") + "\n" + "\n".join(handler.requirement_lines) + "\n"
        )
    wheelhouse = None
    if config.packages.source == "wheelhouse":
        wheelhouse = build_wheelhouse(
            build_dir,
            requirements,
            config.packages.python_version,
            config.packages.platforms,
            [handler.wheel] if handler.wheel is not None else [],
        )
    release = build_release(build_dir, source_root, handler.directory)
    return Artifacts(release, requirements, wheelhouse)


def deploy(
    config: StackConfig,
    secrets: StackSecrets,
    identities: Identities,
    build_dir: Path,
    source_root: Path = REPO_ROOT,
) -> Deployed:
    """Create every host's resources, in order: Redis and its groups before the service."""
    artifacts = build_artifacts(config, build_dir, source_root)

    def connect(target: SshTarget) -> remote.ConnectionArgs:
        return ssh_connection(
            target, secrets.ssh_private_key, config.bastion, secrets.bastion_private_key
        )

    topology, primary = config.topology, config.topology.primary
    replication: list[RedisReplication] = []
    sentinels: list[RedisSentinel] = []
    if topology.mode == "sentinel":
        replication, sentinels = _sentinel_mode(config, secrets, identities, connect)
    streams = RedisStreams(
        primary.name,
        RedisStreamsArgs(
            node=primary,
            connection=connect(primary.target),
            redis=config.redis,
            password=secrets.redis_password,
            user_passwords=secrets.redis_user_passwords,
            install_os_packages=config.install_os_packages,
            drop_on_destroy=config.drop_streams_on_destroy,
            identity=identities.of(primary.host),
        ),
    )
    ready: list[pulumi.Resource] = [streams.group_setup, *(item.setup for item in sentinels)]
    services = tuple(
        ServiceDeployment(
            host.name,
            ServiceDeploymentArgs(
                host=host,
                connection=connect(host.target),
                service=config.service,
                settings=config.app,
                secrets=secrets.service,
                packages=config.packages,
                artifacts=artifacts,
                install_os_packages=config.install_os_packages,
                ready_after=ready,
                identity=identities.of(host.public_host),
            ),
        )
        for host in topology.app_hosts
    )
    edges = _edges(config, secrets, identities, services, connect)
    return Deployed(streams, services, tuple(replication), tuple(sentinels), edges)


def _edges(
    config: StackConfig,
    secrets: StackSecrets,
    identities: Identities,
    services: tuple[ServiceDeployment, ...],
    connect: Any,
) -> tuple[EdgeProxy, ...]:
    """The front of every API host, once the service's directories are there."""
    edge, certificate, key = config.edge, secrets.tls_certificate, secrets.tls_private_key
    if edge is None or certificate is None or key is None:
        return ()
    return tuple(
        EdgeProxy(
            f"{service_host.name}-edge",
            EdgeProxyArgs(
                host=service_host,
                connection=connect(service_host.target),
                service=config.service,
                edge=edge,
                certificate=certificate,
                private_key=key,
                install_os_packages=config.install_os_packages,
                ready_after=[service.preflight],
                identity=identities.of(service_host.public_host),
                upstreams_after=list(service.instances.values()),
            ),
        )
        for service_host, service in zip(config.topology.app_hosts, services, strict=True)
        if service_host.edge_address is not None
    )


def _sentinel_mode(
    config: StackConfig, secrets: StackSecrets, identities: Identities, connect: Any
) -> tuple[list[RedisReplication], list[RedisSentinel]]:
    """Replication on every data node (the primary first), then a sentinel on each host."""
    topology = config.topology
    password = secrets.redis_password
    if password is None:
        raise StackConfigError("shield-orchestrator:redisPassword: sentinel mode needs it")
    replication: list[RedisReplication] = []
    for node in (topology.primary, *topology.replicas):
        replication.append(
            RedisReplication(
                "redis-primary" if node.replica_of is None else node.name,
                RedisReplicationArgs(
                    target=node.target,
                    connection=connect(node.target),
                    redis=dataclasses.replace(config.redis, host=node.host, port=node.port),
                    replica_of=node.replica_of,
                    password=password,
                    identity=identities.of(node.host),
                    ready_after=[item.setup for item in replication[:1]],
                ),
            )
        )
    sentinels = [
        RedisSentinel(
            sentinel.name,
            RedisSentinelArgs(
                target=sentinel.target,
                connection=connect(sentinel.target),
                host=sentinel.host,
                port=sentinel.port,
                master=topology.sentinel_master,
                primary=(topology.primary.host, topology.primary.port),
                quorum=topology.sentinel_quorum,
                password=password,
                identity=identities.of(sentinel.host),
                ready_after=[item.setup for item in replication],
            ),
        )
        for sentinel in topology.sentinels
    ]
    return replication, sentinels


def endpoints(config: StackConfig) -> dict[str, str]:
    """The URLs users and UIs connect to, on the first API process."""
    base = api_endpoints(config)[0] if api_endpoints(config) else ""
    socket_base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return {
        "sse_url": f"{base}/events/stream",
        "ws_url": socket_base + "/events/ws",
        "stats_url": f"{base}/events/stats",
        "health_url": f"{base}/health/detailed",
        "metrics_url": f"{base}/metrics",
    }


def api_endpoints(config: StackConfig) -> list[str]:
    """The base URL of every orchestrator host's front (https), or without one, of every API
    process."""
    return [url for host in config.topology.app_hosts for url in host.base_urls]


def redis_nodes(
    config: StackConfig, replication: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, Any]]:
    """Each Redis node's role and replication offset (a replica's lag behind its primary's
    offset, in bytes), from each node's INFO replication fields."""
    nodes: dict[str, dict[str, Any]] = {}
    for host, info in replication.items():
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


def current_primary(
    config: StackConfig, replication: Mapping[str, Mapping[str, str]]
) -> str | None:
    """The node that says it is the primary (single mode: the Redis host)."""
    if config.topology.mode == "single":
        return config.redis.address
    found = [
        f"{host}:{config.redis.port}"
        for host, info in replication.items()
        if info.get("role") == "master"
    ]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class Observed:
    """What the hosts report: the first API process's health, each Redis node's INFO
    replication fields."""

    health: dict[str, Any]
    replication: dict[str, dict[str, str]]


def outputs(
    config: StackConfig,
    deployed: Deployed,
    observed: pulumi.Output[Observed] | None = None,
    replication: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Everything exported from the stack.

    With observed (an up), streamHealth, redisNodes and currentPrimary are what the hosts
    report once every step of this run has finished; else (a preview) the health step's
    answer and the replication read with the identities.
    """
    result: dict[str, Any] = {
        "endpoints": endpoints(config),
        "apiEndpoints": api_endpoints(config),
        "redisAddress": config.redis.address,
        "streamHealth": deployed.health,
        "consumerGroups": deployed.streams.groups,
    }
    if observed is not None:
        result["streamHealth"] = observed.apply(lambda found: found.health)
        result["redisNodes"] = observed.apply(lambda found: redis_nodes(config, found.replication))
        result["currentPrimary"] = observed.apply(
            lambda found: current_primary(config, found.replication)
        )
    elif replication is not None:
        result["redisNodes"] = redis_nodes(config, replication)
        result["currentPrimary"] = current_primary(config, replication)
    return result
