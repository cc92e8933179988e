"""The real Pulumi CLI on a copy of this project: Pulumi.yaml, the language host, the program.

The copy holds Pulumi.yaml, infra/, service/ and examples/ (the lab's handler), so a test can
change the service's or the handler's code without touching the repo; `build/` links to the
repo's by default, so the wheelhouse is downloaded once.
Every command's output is kept in `transcript`, for the tests that search it for secrets.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
STACK = "lab"
PROJECT = "shield-orchestrator"
COMMAND_TIMEOUT_S = 600


# The TLS front's component and steps on the lab's orchestrator (edgeProxy nginx).
FRONT_RESOURCES = {"orchestrator-edge", "orchestrator-edge-install", "orchestrator-edge-config"}
# Every resource the lab stack's single-host program creates without the front, by name.
SERVICE_RESOURCES = {
    "redis",
    "redis-preflight",
    # The service's ACL users, the default user off, maxmemory (infra/stacks/lab.yaml).
    "redis-access",
    "redis-groups",
    "orchestrator",
    "orchestrator-preflight",
    "orchestrator-release-copy",
    "orchestrator-release",
    "orchestrator-wheelhouse-copy",
    "orchestrator-venv",
    "orchestrator-units",
    "orchestrator-api-8000",
    "orchestrator-worker-1",
    "orchestrator-collector",
    "orchestrator-health",
}
# ... and with it, as the lab stack deploys by default.
ALL_RESOURCES = SERVICE_RESOURCES | FRONT_RESOURCES


class EngineFailed(AssertionError):
    """A pulumi command exited non-zero; the message holds its output."""


@dataclass
class Engine:
    root: Path
    env: dict[str, str]
    transcript: list[str] = field(default_factory=list)
    stack: str = STACK

    @classmethod
    def create(
        cls, root: Path, build_dir: Path = REPO_ROOT / "build", stack: str = STACK
    ) -> Engine:
        """A project copy in root with a new stack (its settings from infra/stacks/<stack>.yaml);
        build_dir holds the built artifacts."""
        bin_dir = os.environ.get("PULUMI_BIN_DIR")
        if not bin_dir or not (Path(bin_dir) / "pulumi").exists():
            raise EngineFailed("PULUMI_BIN_DIR does not hold a pulumi binary: run `make test`")
        root.mkdir(parents=True, exist_ok=True)
        project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
        project["runtime"]["options"]["virtualenv"] = str(REPO_ROOT / ".venv")
        (root / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
        for package in ("infra", "service", "examples"):
            shutil.copytree(
                REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        build_dir.mkdir(parents=True, exist_ok=True)
        (root / "build").symlink_to(build_dir)
        shutil.copy(REPO_ROOT / "infra" / "stacks" / f"{stack}.yaml", root / f"Pulumi.{stack}.yaml")
        shutil.copy(REPO_ROOT / "Pulumi.dev.yaml", root / "Pulumi.dev.yaml")
        state = root / ".pulumi-state"
        state.mkdir()
        # The caller's PULUMI_HOME (where the provider is installed) stays; the rest is ours.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PULUMI_") or key == "PULUMI_HOME"
        }
        env.update(
            PATH=f"{bin_dir}:{env['PATH']}",
            PULUMI_BACKEND_URL=f"file://{state}",
            # A passphrase of this project copy's own, as each lab has (scripts/deploy-lab).
            PULUMI_CONFIG_PASSPHRASE=secrets.token_hex(16),
            PULUMI_SKIP_UPDATE_CHECK="true",
        )
        engine = cls(root, env, stack=stack)
        engine.run("stack", "init", stack)
        return engine

    @property
    def state_dir(self) -> Path:
        return self.root / ".pulumi-state"

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """One pulumi command; its stdout and stderr together, and in the transcript."""
        result = subprocess.run(
            ["pulumi", "--non-interactive", "--color", "never", *args],
            cwd=self.root,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        output = result.stdout + result.stderr
        self.transcript.append(output)
        if check and result.returncode != 0:
            raise EngineFailed(f"pulumi {' '.join(args)} failed:\n{output[-6000:]}")
        return output

    def fails(self, *args: str) -> str:
        """Run a command that must fail; its output."""
        result = self.run(*args, check=False)
        if "error:" not in result:
            raise AssertionError(f"pulumi {' '.join(args)} did not fail:\n{result[-3000:]}")
        return result

    def up(self, *extra: str) -> str:
        return self.run("up", "--yes", "--skip-preview", "--stack", self.stack, *extra)

    def preview_steps(self) -> dict[str, str]:
        """Each resource's planned operation, by name (`same`, `create`, `update`, ...)."""
        output = self.run("preview", "--json", "--stack", self.stack)
        plan: dict[str, Any] = json.loads(output[output.index("{") :])
        return {
            step["urn"].rsplit("::", 1)[-1]: step["op"]
            for step in plan.get("steps", [])
            if "::pulumi:pulumi:Stack::" not in step["urn"]
        }

    def changed(self) -> dict[str, str]:
        """The resources a preview would touch, with their operation."""
        return {name: op for name, op in self.preview_steps().items() if op != "same"}

    def set_config(self, key: str, value: str) -> None:
        self.run("config", "set", "--stack", self.stack, key, "--", value)

    def set_secret(self, key: str, value: str) -> None:
        """A secret goes in on stdin, so it is on no command line."""
        self.run("config", "set", "--stack", self.stack, "--secret", key, stdin=value)

    def remove_config(self, key: str) -> None:
        self.run("config", "rm", "--stack", self.stack, key)

    def outputs(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            self.run("stack", "output", "--stack", self.stack, "--json")
        )
        return result

    def export(self) -> str:
        return self.run("stack", "export", "--stack", self.stack)

    def last_update_changes(self) -> dict[str, int]:
        history = json.loads(self.run("stack", "history", "--stack", self.stack, "--json"))
        changes: dict[str, int] = history[0]["resourceChanges"]
        return changes
