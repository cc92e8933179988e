"""Child processes of the service the way systemd runs them: their environment, waiting until
one serves, and stopping them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

import httpx

from harness.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 15.0

AnyPopen = subprocess.Popen[bytes] | subprocess.Popen[str]


def service_env(redis_url: str, **settings: object) -> dict[str, str]:
    """This environment without the caller's SHIELD_* variables, plus the given settings
    (as SHIELD_<NAME>) and the repo on the path."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SHIELD_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["SHIELD_REDIS_URL"] = redis_url
    for name, value in settings.items():
        env[f"SHIELD_{name.upper()}"] = str(value)
    return env


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_until_serving(url: str, process: AnyPopen, timeout_s: float = 20) -> None:
    """Wait until url answers 200; fail early if the process serving it died."""

    def serving() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {process.returncode}")
        return httpx.get(url, timeout=1).status_code == 200

    wait_until(
        serving,
        timeout_s,
        interval_s=0.1,
        describe=f"{url} to answer 200",
        ignoring=(httpx.HTTPError,),
    )


def terminate(
    processes: Iterable[AnyPopen], groups: bool = False, timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM them all at once, then SIGKILL any still running after timeout_s.

    With groups, each was started with start_new_session and its whole process group is
    signalled: a peer's CLI that forks its workers (taskiq) must not leave them behind.
    """
    running = [process for process in processes if process.poll() is None]

    def signal_all(process: AnyPopen, signum: int) -> None:
        if groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)

    for process in running:
        signal_all(process, signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_all(process, signal.SIGKILL)
            process.wait()
    # A group can outlive its leader for a moment; make sure nothing of it is left.
    for process in running if groups else []:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
