"""The Pulumi program as a function, for `pulumi up` (via __main__) and the Automation API."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi

from infra import config as stack_config
from infra import facts, host_scripts, redis_access, sentinel_scripts
from infra.artifacts import REPO_ROOT
from infra.config import StackConfig
from infra.stack import Identities, Observed, deploy, outputs, warn_about_unpinned_hosts

BUILD_DIR = REPO_ROOT / "build"


def identity_script(config: StackConfig, host: str, create: bool) -> str:
    """What a host's identity is read with: its token lives where its deployment lives (the
    data of the Redis primary, a file on any other host); a Redis node also reports its INFO
    replication. First, every host checks what stands at our names: a host of the service
    its units, directories and ports, the Redis host our access unit and directory, a
    sentinel host its units and directory, and any host that keeps its token in installDir
    that directory. With create False (a preview) the script writes nothing."""
    topology, service, redis = config.topology, config.service, config.redis
    apps = [app for app in topology.app_hosts if app.public_host == host]
    checks = [
        host_scripts.service_checks(
            host,
            service,
            app.bind_address,
            app.api_ports,
            None if app.edge_address is None else (app.edge_address, app.edge_port),
        )
        for app in apps
    ]
    if host == topology.primary.host:
        identity = host_scripts.redis_identity(host, redis, create)
        if redis.access.enabled:
            checks.append(redis_access.access_checks())
    elif host in {node.host for node in topology.replicas}:
        replica = dataclasses.replace(redis, host=host)
        identity = host_scripts.redis_replica_identity(service.install_dir, host, replica, create)
    else:
        identity = host_scripts.orchestrator_identity(service.install_dir, create)
    if not apps and host != topology.primary.host:
        # Its token goes into installDir: never into someone else's directory.
        checks.append(host_scripts.install_dir_check(service))
    ports = [sentinel.port for sentinel in topology.sentinels if sentinel.host == host]
    if ports:
        checks.append(sentinel_scripts.sentinel_checks(ports))
    return host_scripts.HEADER + host_scripts.check_prelude(service) + "".join(checks) + identity


def read_identities(config: StackConfig, source: pulumi.Config) -> Identities:
    """Each host's identity over SSH, with the plain keys and password, which go nowhere else.

    A preview only reads; an up records a new host's token before any step. A host with
    something of someone else's at our names stops both, before any change.
    """
    credentials = facts.SshCredentials(
        private_key=source.require("sshPrivateKey"),
        bastion_private_key=source.get("bastionPrivateKey"),
    )
    password = (source.get("redisPassword") or "") + "\n"
    topology = config.topology
    redis_hosts = {topology.primary.host, *(node.host for node in topology.replicas)}
    create = not pulumi.runtime.is_dry_run()
    found = {
        host: facts.read_identity(
            ", ".join(topology.roles(host)),
            target,
            credentials,
            identity_script(config, host, create),
            config.bastion,
            password if host in redis_hosts else "",
        )
        for host, target in topology.hosts().items()
    }
    for host, identity in found.items():
        if identity.conflicts:
            raise facts.HostConflict.of(host, identity.conflicts)
    return Identities(
        by_host={host: identity.digest for host, identity in found.items()},
        redis_nodes={host: dict(found[host].info) for host in found if host in redis_hosts},
    )


# run(host, script, secret_key) -> the script's stdout on that host; the value of the stack's
# secret secret_key (redisPassword, apiToken), if named, goes on the script's stdin.
Runner = Callable[[str, str, str | None], str]


def observe(config: StackConfig, run: Runner) -> Observed:
    """Read, after this run's steps, the first API process's health and each Redis node's
    INFO replication."""
    topology = config.topology
    api_hosts = topology.api_hosts
    health: dict[str, Any] = {}
    if api_hosts:
        first = api_hosts[0]
        health_script = host_scripts.health_read(first.health_urls[0])
        stdout = run(first.public_host, health_script, "apiToken")
        health = json.loads(stdout.strip().splitlines()[-1])
    replication = {}
    for node in (topology.primary, *topology.replicas):
        redis = dataclasses.replace(config.redis, host=node.host, port=node.port)
        stdout = run(node.host, host_scripts.redis_info(node.host, redis), "redisPassword")
        replication[node.host] = dict(facts.parse_info(stdout))
    return Observed(health, replication)


def ssh_runner(config: StackConfig, source: pulumi.Config) -> Runner:
    """A runner over SSH with the stack's key; the secret a script asks for goes on stdin."""
    credentials = facts.SshCredentials(
        private_key=source.require("sshPrivateKey"),
        bastion_private_key=source.get("bastionPrivateKey"),
    )
    hosts, topology = config.topology.hosts(), config.topology

    def run(host: str, script: str, secret_key: str | None) -> str:
        stdin = (source.get(secret_key) or "") + "\n" if secret_key else ""
        role = ", ".join(topology.roles(host))
        return facts.run_script(role, hosts[host], credentials, script, config.bastion, stdin)

    return run


def main(build_dir: Path = BUILD_DIR) -> None:
    """Read and validate the stack config, read each host's identity, compose, export."""
    source = pulumi.Config()
    settings, secrets = stack_config.load(source)
    warn_about_unpinned_hosts(settings)
    identities = read_identities(settings, source)
    deployed = deploy(settings, secrets, identities, build_dir)
    observed = None
    if not pulumi.runtime.is_dry_run():
        # After every up, no-op ones too: read once every step has finished. Outputs are
        # not resources, so this changes what `preview --expect-no-changes` sees in no way.
        run = ssh_runner(settings, source)
        observed = deployed.settled().apply(lambda _: observe(settings, run))
    exported = outputs(settings, deployed, observed, identities.redis_nodes)
    for name, value in exported.items():
        pulumi.export(name, value)
