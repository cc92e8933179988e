"""Composing the stack: artifacts, both components, and the outputs users read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_command import remote

from infra.artifacts import REPO_ROOT, build_release, build_wheelhouse
from infra.components.redis_streams import RedisStreams, RedisStreamsArgs
from infra.components.service_deployment import ServiceDeployment, ServiceDeploymentArgs
from infra.config import SshTarget, StackConfig, StackSecrets
from infra.connection import ssh_connection, warn_if_unpinned

REQUIREMENTS = Path("service") / "requirements.txt"


@dataclass(frozen=True)
class Deployed:
    streams: RedisStreams
    service: ServiceDeployment


@dataclass(frozen=True)
class Identities:
    """Each host's identity digest (infra.facts), read before any step runs."""

    orchestrator: str
    redis: str


def warn_about_unpinned_hosts(config: StackConfig) -> None:
    """Preview says so for each host whose SSH key is not pinned."""
    warn_if_unpinned("orchestrator", config.orchestrator)
    warn_if_unpinned("redis", config.redis_host)
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
    service = ServiceDeployment(
        "orchestrator",
        ServiceDeploymentArgs(
            target=config.orchestrator,
            connection=connect(config.orchestrator),
            service=config.service,
            redis=config.redis,
            packages=config.packages,
            requirements=requirements.read_text(),
            release=release,
            wheelhouse=wheelhouse,
            redis_password=secrets.redis_password,
            api_token=secrets.api_token,
            install_os_packages=config.install_os_packages,
            ready_after=[streams.group_setup],
            identity=identities.orchestrator,
        ),
    )
    return Deployed(streams, service)


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


def outputs(config: StackConfig, deployed: Deployed) -> dict[str, Any]:
    """Everything exported from the stack."""
    return {
        "endpoints": endpoints(config),
        "redisAddress": config.redis.address,
        "streamHealth": deployed.service.health,
        "consumerGroups": deployed.streams.groups,
    }
