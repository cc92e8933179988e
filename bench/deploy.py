"""Deploy timings: the real `pulumi up` of the real program on a freshly built lab.

Cold up (new hosts and an empty build directory, so the wheelhouse is downloaded too), a
no-op up, a code-only up, and destroy, each timed from the outside. The CLI's own
output gives each step's seconds, which says where the time goes.
The lab and the Pulumi CLI driver are the ones the lab tests use, from harness/.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.engine import STACK, Engine
from harness.hosts import LAB_USER_SECRETS, Lab
from harness.processes import REPO_ROOT

TARGETS_S = {"cold up": 120.0, "no-op up": 15.0, "code-only up": 30.0}


# A finished step in the CLI's output: "<op> <type> <name> created (0.16s) ...".
_STEP = re.compile(
    r"^\s*\S+\s+(?P<type>[\w:]+)\s+(?P<name>\S+)\s+"
    r"(?:created|updated|deleted|created replacement|deleted original|replaced)\s+"
    r"\((?:(?P<minutes>\d+)m)?(?P<seconds>[\d.]+)s\)"
)


def step_durations(output: str) -> dict[str, float]:
    """Seconds each step took, as the CLI reports them when they finish."""
    durations: dict[str, float] = {}
    for line in output.splitlines():
        match = _STEP.match(line)
        if match is None or match["type"].startswith("shield:infra:"):
            continue
        seconds = float(match["seconds"]) + 60 * int(match["minutes"] or 0)
        name = "whole update" if match["type"] == "pulumi:pulumi:Stack" else match["name"]
        durations[name] = round(durations.get(name, 0.0) + seconds, 2)
    return durations


def _timed(action: Callable[[], str]) -> tuple[float, str]:
    began = time.monotonic()
    output = action()
    return round(time.monotonic() - began, 1), output


def measure_deploy(workdir: Path) -> dict[str, Any]:
    """Rebuild the lab, then time the four operations; rows plus the slowest steps."""
    lab = Lab.rebuild()
    engine = Engine.create(workdir / "project", build_dir=workdir / "build")
    engine.set_config("orchestratorHostKey", lab.orchestrator_host_key)
    engine.set_config("redisHostKey", lab.redis_host_key)
    engine.set_secret("sshPrivateKey", lab.ssh_key.read_text())
    engine.set_secret("redisPassword", lab.redis_password)
    for key, value in LAB_USER_SECRETS.items():  # the lab stack's Redis ACL users
        engine.set_secret(key, value)
    # The TLS front's certificate, from the lab's own CA, as `make up` sets it.
    tls = workdir / "tls"
    subprocess.run([str(REPO_ROOT / "scripts" / "lab-tls"), str(tls)], check=True)
    engine.set_secret("tlsCertificate", (tls / "server.crt").read_text())
    engine.set_secret("tlsPrivateKey", (tls / "server.key").read_text())
    runs = {"cold up": _timed(engine.up)}
    runs["no-op up"] = _timed(lambda: engine.up("--expect-no-changes"))
    worker = engine.root / "service" / "worker.py"
    worker.write_text(worker.read_text() + "\n# a code-only change, timed by the bench\n")
    runs["code-only up"] = _timed(engine.up)
    runs["destroy"] = _timed(lambda: engine.run("destroy", "--yes", "--stack", STACK))
    seconds = {name: value for name, (value, _) in runs.items()}
    rows = [
        {
            "operation": name,
            "seconds": value,
            "target_s": TARGETS_S.get(name),
            "met": None if name not in TARGETS_S else value <= TARGETS_S[name],
        }
        for name, value in seconds.items()
    ]
    steps = {name: step_durations(output) for name, (_, output) in runs.items()}
    return {"timings": rows, "steps": steps}
