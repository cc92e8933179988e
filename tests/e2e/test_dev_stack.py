"""The dev stack is the user's network: on this machine its preview must stop before any host.

The program reads each host's identity over SSH before any step, so a preview that got past
config validation would dial 192.168.10.x. Without the SSH key in the stack's config it must
fail on that key first, naming it, having touched no host.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from harness.engine import REPO_ROOT, Engine

pytestmark = pytest.mark.e2e


def test_dev_preview_asks_for_the_ssh_key_before_reaching_any_host(tmp_path: Path) -> None:
    engine = Engine.create(tmp_path / "project", build_dir=tmp_path / "build")
    engine.run("stack", "init", "dev")
    committed = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    shown = engine.run("config", "get", "--stack", "dev", "orchestratorHost").strip()
    assert shown == committed["shield-orchestrator:orchestratorHost"]
    began = time.monotonic()
    output = engine.fails("preview", "--stack", "dev")
    assert "shield-orchestrator:sshPrivateKey: is required" in output
    assert "cannot read its identity" not in output
    # An SSH attempt to an unreachable network would take its ConnectTimeout (10 s) or more.
    assert time.monotonic() - began < 10
