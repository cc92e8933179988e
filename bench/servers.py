"""The processes a benchmark measures: redis-server, our API, the original design's baseline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.processes import REPO_ROOT, service_env
from tests.support.redis_server import RedisServer, free_port


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir, appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


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
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"{module_app} did not start")
        time.sleep(0.1)
    try:
        yield base_url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
