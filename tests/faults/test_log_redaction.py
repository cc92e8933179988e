"""The API token never reaches the logs of a real uvicorn process, on any logger."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import websockets

from harness.ports import free_port
from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tests.support.processes import REPO_ROOT, service_env, stop

TOKEN = "tok-7f3a9c41e2d85b60"


@pytest.fixture
def logging_api(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """uvicorn as the unit file runs it, at debug level, its stdout and stderr in a file."""
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "service.main:app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "debug",
        ],
        cwd=REPO_ROOT,
        env={**service_env(redis_server.url, api_token=TOKEN), "PYTHONUNBUFFERED": "1"},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    log_file.close()
    base_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout_s=20)
        yield base_url, process, log_path
    finally:
        _end(process)


def _end(process: subprocess.Popen[str]) -> None:
    # Once a WebSocket client has been served, uvicorn at info level may wait on SIGTERM for
    # a connection task that never ends (as on main); the log is written unbuffered anyway.
    try:
        stop(process, timeout_s=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


async def _use_the_token_every_way(base_url: str) -> None:
    ws_base = base_url.replace("http://", "ws://")
    async with websockets.connect(f"{ws_base}/events/ws?last_id=$&access_token={TOKEN}"):
        pass
    async with httpx.AsyncClient(base_url=base_url) as client:
        params = {"last_id": "$", "access_token": TOKEN}
        async with client.stream("GET", "/events/stream", params=params) as reply:
            assert reply.status_code == 200
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{ws_base}/events/ws?access_token={TOKEN}x"):
            pass
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/events/stats", headers=headers)).status_code == 200
        bad = await client.get("/events/stream", params={"last_id": "x", "access_token": TOKEN})
        assert bad.status_code == 400


def test_token_is_redacted_on_every_logger(
    logging_api: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base_url, process, log_path = logging_api
    asyncio.run(_use_the_token_every_way(base_url))
    _end(process)
    output = log_path.read_text()
    # The lines that used to carry it are there, masked: the WebSocket handshake that
    # uvicorn.error logs, and the request lines of uvicorn.access.
    assert '"WebSocket /events/ws?last_id=$&access_token=***" [accepted]' in output, output
    assert "GET /events/stream?last_id=%24&access_token=*** HTTP/1.1" in output, output
    assert '"WebSocket /events/ws?access_token=***" 401' in output, output
    assert TOKEN not in output
