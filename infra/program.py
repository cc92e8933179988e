"""The Pulumi program as a function, for `pulumi up` (via __main__) and the Automation API."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pulumi

from infra import config as stack_config
from infra import facts, host_scripts
from infra.artifacts import REPO_ROOT
from infra.config import StackConfig
from infra.stack import Identities, deploy, outputs, warn_about_unpinned_hosts

BUILD_DIR = REPO_ROOT / "build"


def identity_script(config: StackConfig, host: str) -> str:
    """What a host's identity is read with: its token lives where its deployment lives (the
    data of the Redis primary, a file on any other host), and a Redis node also reports its
    INFO replication."""
    topology, install_dir = config.topology, config.service.install_dir
    redis = config.redis
    if host == topology.primary.host:
        return host_scripts.redis_identity(host, redis)
    for node in topology.replicas:
        if node.host == host:
            replica = dataclasses.replace(redis, host=node.host, port=node.port)
            return host_scripts.redis_replica_identity(install_dir, host, replica)
    return host_scripts.orchestrator_identity(install_dir)


def read_identities(config: StackConfig, source: pulumi.Config) -> Identities:
    """Each host's identity over SSH, with the plain keys and password, which go nowhere else."""
    credentials = facts.SshCredentials(
        private_key=source.require("sshPrivateKey"),
        bastion_private_key=source.get("bastionPrivateKey"),
    )
    password = (source.get("redisPassword") or "") + "\n"
    topology = config.topology
    redis_hosts = {topology.primary.host, *(node.host for node in topology.replicas)}
    found = {
        host: facts.read_identity(
            ", ".join(topology.roles(host)),
            target,
            credentials,
            identity_script(config, host),
            config.bastion,
            password if host in redis_hosts else "",
        )
        for host, target in topology.hosts().items()
    }
    return Identities(
        by_host={host: identity.digest for host, identity in found.items()},
        redis_nodes={host: dict(found[host].info) for host in found if host in redis_hosts},
    )


def main(build_dir: Path = BUILD_DIR) -> None:
    """Read and validate the stack config, read each host's identity, compose, export."""
    source = pulumi.Config()
    settings, secrets = stack_config.load(source)
    warn_about_unpinned_hosts(settings)
    identities = read_identities(settings, source)
    deployed = deploy(settings, secrets, identities, build_dir)
    for name, value in outputs(settings, deployed, identities).items():
        pulumi.export(name, value)
