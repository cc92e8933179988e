"""Where the benchmark's child processes run from, with which environment, and how they stop.

bench/ keeps its own small copy of these facts rather than importing tests/ (a benchmark is
not a test, and tests/ is free to change its helpers); the settings still travel as the
service reads them, SHIELD_* variables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """A loopback port nobody holds right now (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_env(redis_url: str, **settings: object) -> dict[str, str]:
    """This environment without any SHIELD_* of the caller's, plus the given settings."""
    inherited = {
        name: value for name, value in os.environ.items() if not name.startswith("SHIELD_")
    }
    shield = {f"SHIELD_{name.upper()}": str(value) for name, value in settings.items()}
    return {**inherited, **shield, "SHIELD_REDIS_URL": redis_url, "PYTHONPATH": str(REPO_ROOT)}


def terminate(
    processes: Iterable[subprocess.Popen[bytes] | subprocess.Popen[str]], groups: bool = False
) -> None:
    """SIGTERM them all at once, then SIGKILL any still running after STOP_TIMEOUT_S.

    With groups, each was started with start_new_session and its whole process group is
    signalled: a peer's CLI that forks its workers (taskiq) must not leave them behind.
    """
    running = [process for process in processes if process.poll() is None]

    def signal_all(process: subprocess.Popen[bytes] | subprocess.Popen[str], signum: int) -> None:
        if groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)

    for process in running:
        signal_all(process, signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            signal_all(process, signal.SIGKILL)
            process.wait()
    # A group can outlive its leader for a moment; make sure nothing of it is left.
    for process in running if groups else []:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
