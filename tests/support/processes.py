"""Starting the real worker and API processes the way systemd would."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


# Retries wait 25 to 50 ms at first in tests, so a test of three attempts takes no seconds;
# the backoff itself is tested with its real defaults.
TEST_RETRY_BACKOFF = {"retry_backoff_ms": 50, "retry_backoff_max_ms": 1000}


def service_env(redis_url: str, **settings: object) -> dict[str, str]:
    """Environment for a service process: SHIELD_* settings and the repo on the path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHIELD_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["SHIELD_REDIS_URL"] = redis_url
    for name, value in {**TEST_RETRY_BACKOFF, **settings}.items():
        env[f"SHIELD_{name.upper()}"] = str(value)
    return env


def start_worker(
    env: Mapping[str, str], consumer: str | None = None, log: IO[str] | None = None
) -> subprocess.Popen[str]:
    """The worker; its output goes to `log` when the test does not read it (a full pipe would
    block the worker)."""
    command = [sys.executable, "-m", "service.worker"]
    if consumer:
        command += ["--consumer", consumer]
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=log or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(
    process: subprocess.Popen[str], signum: int = signal.SIGTERM, timeout_s: float = 15
) -> int:
    if process.poll() is None:
        process.send_signal(signum)
    return process.wait(timeout=timeout_s)


def start_api(
    env: Mapping[str, str], port: int, log: IO[str] | None = None
) -> subprocess.Popen[str]:
    """uvicorn service.main:app on 127.0.0.1:port, as the unit file starts it."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "service.main:app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ],
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=log or subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_until_serving(
    base_url: str, process: subprocess.Popen[str], timeout_s: float = 20
) -> None:
    """Wait until an API process answers /health; fail early if it died."""

    def serving() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the API at {base_url} exited with {process.returncode}")
        return httpx.get(f"{base_url}/health", timeout=1).status_code == 200

    wait_until(
        serving,
        timeout_s,
        interval_s=0.1,
        describe=f"the API at {base_url} to answer /health",
        ignoring=(httpx.HTTPError,),
    )


def stop_all(processes: list[subprocess.Popen[str]], timeout_s: float = 15) -> None:
    """SIGTERM every process, then SIGKILL whichever has not exited in time."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def api_server(redis_url: str, **settings: object) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A uvicorn API process serving on a free port, with room for many client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    port = free_port()
    process = start_api(service_env(redis_url, **settings), port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base_url, process)
        yield base_url, process
    finally:
        stop(process)
