"""The Pulumi program as a function, for `pulumi up` (via __main__) and the Automation API."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra import config as stack_config
from infra import facts, scripts
from infra.artifacts import REPO_ROOT
from infra.config import StackConfig
from infra.stack import Identities, deploy, outputs, warn_about_unpinned_hosts

BUILD_DIR = REPO_ROOT / "build"


def read_identities(config: StackConfig, source: pulumi.Config) -> Identities:
    """Each host's identity over SSH, with the plain keys and password, which go nowhere else."""
    credentials = facts.SshCredentials(
        private_key=source.require("sshPrivateKey"),
        bastion_private_key=source.get("bastionPrivateKey"),
    )
    password = source.get("redisPassword") or ""
    found = facts.read_identities(
        {
            "orchestrator": (
                config.orchestrator,
                scripts.orchestrator_identity(config.service.install_dir),
                "",
            ),
            "redis": (
                config.redis_host,
                scripts.redis_identity(config.redis_host.host, config.redis),
                password + "\n",
            ),
        },
        credentials,
        config.bastion,
    )
    return Identities(found["orchestrator"].digest, found["redis"].digest)


def main(build_dir: Path = BUILD_DIR) -> None:
    """Read and validate the stack config, read each host's identity, compose, export."""
    source = pulumi.Config()
    settings, secrets = stack_config.load(source)
    warn_about_unpinned_hosts(settings)
    identities = read_identities(settings, source)
    deployed = deploy(settings, secrets, identities, build_dir)
    for name, value in outputs(settings, deployed).items():
        pulumi.export(name, value)
