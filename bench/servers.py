"""The processes a benchmark measures: redis-server, our API, the original design's baseline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.processes import REPO_ROOT, free_port, service_env, terminate

READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class RedisProcess:
    """A running redis-server of the benchmark's: no persistence, loopback only."""

    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _wait_for_ping(port: int, process: subprocess.Popen[bytes]) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while process.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"redis-server on port {port} did not answer PING")


@contextmanager
def redis_server(workdir: Path, extra_args: Sequence[str] = ()) -> Iterator[RedisProcess]:
    """A redis-server from PATH on a free port, stopped on the way out."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make deps` (apt redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # Benchmarks measure the streams, not the disk: no RDB snapshots, no AOF.
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    command += ["--save", "", "--appendonly", "no", *extra_args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_ping(port, process)
        yield RedisProcess(port, process.pid)
    finally:
        terminate([process])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_for_http(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    """Poll url until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.1)


@contextmanager
def http_app(module_app: str, redis_url: str, **settings: object) -> Iterator[tuple[str, int]]:
    """uvicorn module:app on a free port; yields its base URL and pid."""
    port = free_port()
    env = service_env(redis_url, **settings)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", module_app, "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
            "--backlog", "4096",
        ],
        cwd=REPO_ROOT,
        env=env,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base_url}/health", process, module_app)
    try:
        yield base_url, process.pid
    finally:
        terminate([process])


def raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
