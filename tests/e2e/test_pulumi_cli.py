"""The real Pulumi CLI, driven through the Automation API with the local file backend.

The program runs inline (the Automation API serves it to the CLI), because the Python
language host cannot be built here. Previews that would reach the command provider cannot
run here either (scripts/pulumi-toolchain says why); what these tests check is everything
before that: stack config, secret encryption, and config errors that name the key.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

from infra.program import main

REPO_ROOT = Path(__file__).resolve().parents[2]
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\ne2e-only\n-----END OPENSSH PRIVATE KEY-----\n"
REDIS_PASSWORD = "e2e-redis-password-4b1d"


Project = tuple[Path, dict[str, str], auto.PulumiCommand]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    bin_dir = os.environ.get("PULUMI_BIN_DIR")
    if not bin_dir or not (Path(bin_dir) / "pulumi").exists():
        pytest.fail("PULUMI_BIN_DIR does not hold a pulumi binary: run `make test`")
    root = tmp_path_factory.mktemp("pulumi-project")
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copy(REPO_ROOT / "infra" / "stacks" / "lab.yaml", root / "Pulumi.lab.yaml")
    # The CLI checks that the project's main directory exists; the program itself runs inline.
    (root / "infra").symlink_to(REPO_ROOT / "infra")
    state = root / ".state"
    state.mkdir()
    env = {
        "PULUMI_CONFIG_PASSPHRASE": "e2e-passphrase",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_BACKEND_URL": f"file://{state}",
    }
    command = auto.PulumiCommand(root=str(Path(bin_dir).parent), skip_version_check=True)
    yield root, env, command


def stack(project: Project, name: str, build_dir: Path) -> auto.Stack:
    root, env, command = project
    workspace = auto.LocalWorkspace(
        work_dir=str(root), program=lambda: main(build_dir), env_vars=env, pulumi_command=command
    )
    return auto.Stack.create_or_select(name, workspace)


def test_cli_version_is_the_built_one(project: Project) -> None:
    assert str(project[2].version).startswith("3.")


def test_secrets_are_encrypted_in_the_stack_config(project: Project, tmp_path: Path) -> None:
    lab = stack(project, "lab", tmp_path / "build")
    lab.set_config("sshPrivateKey", auto.ConfigValue(SSH_KEY, secret=True))
    lab.set_config("redisPassword", auto.ConfigValue(REDIS_PASSWORD, secret=True))
    text = (project[0] / "Pulumi.lab.yaml").read_text()
    assert "shield-orchestrator:sshPrivateKey:\n    secure:" in text
    assert "shield-orchestrator:redisPassword:\n    secure:" in text
    assert REDIS_PASSWORD not in text and "e2e-only" not in text
    assert lab.get_config("redisPassword").value == REDIS_PASSWORD


def test_preview_fails_naming_a_bad_key(project: Project, tmp_path: Path) -> None:
    lab = stack(project, "lab", tmp_path / "build")
    lab.set_config("sshPrivateKey", auto.ConfigValue(SSH_KEY, secret=True))
    lab.set_config("redisPort", auto.ConfigValue("not-a-port"))
    try:
        with pytest.raises(auto.CommandError) as failure:
            lab.preview()
        message = str(failure.value)
        assert "shield-orchestrator:redisPort: must be an integer, got 'not-a-port'" in message
        assert "Traceback" not in str(failure.value)
    finally:
        lab.remove_config("redisPort")


def test_dev_preview_asks_for_the_ssh_key_and_touches_no_host(
    project: Project, tmp_path: Path
) -> None:
    dev = stack(project, "dev", tmp_path / "build")
    committed = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    assert (
        dev.get_config("orchestratorHost").value
        == committed["shield-orchestrator:orchestratorHost"]
    )
    with pytest.raises(auto.CommandError) as failure:
        dev.preview()
    assert "shield-orchestrator:sshPrivateKey: is required" in str(failure.value)
