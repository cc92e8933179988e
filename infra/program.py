"""The Pulumi program as a function, for `pulumi up` (via __main__) and the Automation API."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra import config as stack_config
from infra.artifacts import REPO_ROOT
from infra.stack import deploy, outputs

BUILD_DIR = REPO_ROOT / "build"


def main(build_dir: Path = BUILD_DIR) -> None:
    """Read and validate the stack config, compose both hosts, export the outputs."""
    settings, secrets = stack_config.load(pulumi.Config())
    for name, value in outputs(settings, deploy(settings, secrets, build_dir)).items():
        pulumi.export(name, value)
