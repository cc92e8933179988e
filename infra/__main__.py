"""Entry point of the Pulumi program: read config, compose, export."""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi runs this directory as a script; the repo root makes `infra` and `service` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi  # noqa: E402

from infra import config as stack_config  # noqa: E402
from infra.stack import deploy, outputs  # noqa: E402

BUILD_DIR = Path(__file__).resolve().parent.parent / "build"

settings, secrets = stack_config.load(pulumi.Config())
for name, value in outputs(settings, deploy(settings, secrets, BUILD_DIR)).items():
    pulumi.export(name, value)
