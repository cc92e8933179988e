"""The processes a benchmark measures: redis-server, our API, the original design's baseline."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness.ports import free_port
from harness.processes import REPO_ROOT, service_env, terminate, wait_until_serving
from harness.redis_server import RedisServer

READY_TIMEOUT_S = 20.0


@contextmanager
def redis_server(workdir: Path, extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A redis-server from PATH on a free port, stopped on the way out.

    Benchmarks measure the streams, not the disk: no RDB snapshots, no AOF."""
    server = RedisServer(workdir, appendonly=False, extra_args=extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_http(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    """Poll url until it answers 200; kill the process and fail if it does not in time."""
    try:
        wait_until_serving(url, process, READY_TIMEOUT_S)
    except (TimeoutError, RuntimeError) as error:
        process.kill()
        raise RuntimeError(f"{what} did not start: {error}") from None


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
