"""The official AG-UI client (@ag-ui/client's HttpAgent, on Node) against the live service.

The client comes from npm, pinned by tests/agui_client/package-lock.json, and is installed
there with ``npm ci`` the first time these tests run (node_modules is not committed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.redis_server import RedisServer
from tests.service.handlers import FAIL_MARK
from tests.support.processes import REPO_ROOT, service_env, start_worker

CLIENT_DIR = REPO_ROOT / "tests" / "agui_client"
NPM_CI_TIMEOUT_S = 300
RUN_TIMEOUT_S = 60
PARAGRAPH = 3000


def _installed_lock(client_dir: Path) -> Path:
    return client_dir / "node_modules" / ".package-lock.json"


@pytest.fixture(scope="session")
def node() -> str:
    """Node with the locked @ag-ui/client installed next to the script."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        pytest.fail("node and npm are needed for the AG-UI client tests (apt install nodejs npm)")
    installed = _installed_lock(CLIENT_DIR)
    lock = CLIENT_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [npm_bin, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENT_DIR,
            check=True,
            timeout=NPM_CI_TIMEOUT_S,
        )
    return node_bin


def run_client(node: str, *args: str, document: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [node, "run-agent.mjs", *args],
        cwd=CLIENT_DIR,
        input=document,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def worker(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[None]:
    env = service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        task_handler="tests.service.handlers:fail_marked",
    )
    process = start_worker(env)
    try:
        yield
    finally:
        process.kill()
        process.wait()


def test_the_clients_sequence_checks_are_on(node: str) -> None:
    result = run_client(node, "selfcheck")
    assert result["valid"]["failure"] is None
    assert result["valid"]["outcome"] == "RUN_FINISHED"
    assert result["invalid"]["failure"] == (
        "Cannot send 'STEP_FINISHED' for step \"r-1\" that was not started"
    )
    assert result["invalid"]["outcome"] is None


def test_http_agent_runs_an_ingestion_to_run_finished(
    node: str, api: str, worker: None, redis_client: redis.Redis
) -> None:
    document = "\n\n".join(letter * PARAGRAPH for letter in "abc")
    result = run_client(node, "run", f"{api}/agui/ingest", "node-run-1", document=document)
    assert result["failure"] is None
    assert result["outcome"] == "RUN_FINISHED"
    assert result["events"][0] == "RUN_STARTED"
    assert result["events"][-1] == "RUN_FINISHED"
    assert {"STEP_FINISHED node-run-1-1", "STEP_FINISHED node-run-1-3"} <= set(result["events"])
    assert result["state"] == {"total": 3, "done": 3, "failed": 0}
    tasks = [fields for _, fields in redis_client.xrange("shield:ingestion_queue")]
    assert [task["chunk_id"] for task in tasks] == ["node-run-1-1", "node-run-1-2", "node-run-1-3"]
    assert {task["source_uri"] for task in tasks} == {"file:///from-node.txt"}


def test_http_agent_sees_run_error_for_a_dead_lettered_chunk(
    node: str, api: str, worker: None
) -> None:
    document = "fine\n\n" + FAIL_MARK
    result = run_client(node, "run", f"{api}/agui/ingest", "node-run-2", document=document)
    assert result["outcome"] == "RUN_ERROR: 1 of 1 chunk(s) dead-lettered: node-run-2-1"
    assert result["state"] == {"total": 1, "done": 0, "failed": 1}
    assert result["events"][-1] == "RUN_ERROR"
