"""Starting the real worker and API processes the way systemd would, with test settings."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from harness import processes
from harness.ports import free_port
from harness.processes import REPO_ROOT

# Retries wait 25 to 50 ms at first in tests, so a test of three attempts takes no seconds;
# the backoff itself is tested with its real defaults.
TEST_RETRY_BACKOFF = {"retry_backoff_ms": 50, "retry_backoff_max_ms": 1000}


def service_env(redis_url: str, **settings: object) -> dict[str, str]:
    """Environment for a service process under test: short retry waits unless overridden."""
    return processes.service_env(redis_url, **{**TEST_RETRY_BACKOFF, **settings})


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


def start_collector(env: Mapping[str, str], log: IO[str] | None = None) -> subprocess.Popen[str]:
    """The metrics-collector (python -m service.collector), as its unit starts it beside the
    workers; its output goes to `log` when the test does not read it."""
    return subprocess.Popen(
        [sys.executable, "-m", "service.collector"],
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


class WorkerProcesses(list[subprocess.Popen[str]]):
    """The worker processes one test starts (the `workers` fixture): started with `start`,
    each writing to its own log file, or appended when the test reads their output itself.
    The fixture kills what is still running at the end; `stop_all` stops them gracefully."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self._log_dir = log_dir

    def start(self, env: Mapping[str, str], consumer: str | None = None) -> subprocess.Popen[str]:
        with (self._log_dir / f"worker{len(self)}.log").open("w") as log:
            process = start_worker(env, consumer, log=log)
        self.append(process)
        return process

    def logs(self) -> str:
        """What the started workers wrote, in the order they were started."""
        paths = sorted(self._log_dir.glob("worker*.log"), key=lambda p: int(p.stem[6:]))
        return "".join(path.read_text() for path in paths)

    def stop_all(self) -> str:
        """SIGTERM each, wait for it to finish what it runs and exit; what they wrote."""
        for process in self:
            stop(process)
        return self.logs()

    def kill_all(self) -> None:
        for process in self:
            if process.poll() is None:
                process.kill()
            process.wait()


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
    processes.wait_until_serving(f"{base_url}/health", process, timeout_s)


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
