"""The Pulumi program as a function, for `pulumi up` (via __main__) and the Automation API."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pulumi

from infra import config as stack_config
from infra import facts, scripts
from infra.artifacts import REPO_ROOT
from infra.config import SshTarget, StackConfig
from infra.stack import Identities, deploy, other_hosts, outputs, warn_about_unpinned_hosts

BUILD_DIR = REPO_ROOT / "build"


def read_identities(config: StackConfig, source: pulumi.Config) -> Identities:
    """Each host's identity over SSH, with the plain keys and password, which go nowhere else.

    Redis nodes also report their INFO replication, which the outputs show.
    """
    credentials = facts.SshCredentials(
        private_key=source.require("sshPrivateKey"),
        bastion_private_key=source.get("bastionPrivateKey"),
    )
    password = source.get("redisPassword") or ""
    redis_nodes = {config.redis_host.host: (config.redis_host, config.redis)}
    for node in config.topology.replicas:
        redis_nodes[node.host] = (
            node.target,
            dataclasses.replace(config.redis, host=node.host, port=node.port),
        )
    targets: dict[str, tuple[SshTarget, str, str]] = {}
    install_dir = config.service.install_dir
    for host, (target, redis) in redis_nodes.items():
        script = (
            scripts.redis_identity(host, redis)
            if host == config.redis_host.host
            else scripts.redis_replica_identity(install_dir, host, redis)
        )
        targets[host] = (target, script, password + "\n")
    for target in [config.orchestrator, *other_hosts(config)]:
        if target.host not in targets:
            targets[target.host] = (target, scripts.orchestrator_identity(install_dir), "")
    found = facts.read_identities(
        {_role(config, host): value for host, value in targets.items()},
        credentials,
        config.bastion,
    )
    by_host = {targets_host: found[_role(config, targets_host)] for targets_host in targets}
    return Identities(
        orchestrator=by_host[config.orchestrator.host].digest,
        redis=by_host[config.redis_host.host].digest,
        by_host={host: identity.digest for host, identity in by_host.items()},
        redis_nodes={host: dict(by_host[host].info) for host in redis_nodes},
    )


def _role(config: StackConfig, host: str) -> str:
    """The name errors use for a host: its role for the two legacy hosts, else its address."""
    if host == config.redis_host.host:
        return "redis"
    if host == config.orchestrator.host:
        return "orchestrator"
    return host


def main(build_dir: Path = BUILD_DIR) -> None:
    """Read and validate the stack config, read each host's identity, compose, export."""
    source = pulumi.Config()
    settings, secrets = stack_config.load(source)
    warn_about_unpinned_hosts(settings)
    identities = read_identities(settings, source)
    deployed = deploy(settings, secrets, identities, build_dir)
    for name, value in outputs(settings, deployed, identities).items():
        pulumi.export(name, value)
