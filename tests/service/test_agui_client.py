"""The official AG-UI client (@ag-ui/client's HttpAgent, on Node) against the live service.

The client comes from npm, pinned by tests/agui_client/package-lock.json, and is installed
there with ``npm ci`` the first time these tests run (node_modules is not committed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.redis_server import RedisServer
from tests.service.handlers import FAIL_MARK, HOLD_MARK
from tests.support.processes import REPO_ROOT, WorkerProcesses, service_env

CLIENT_DIR = REPO_ROOT / "tests" / "agui_client"
NPM_CI_TIMEOUT_S = 300
RUN_TIMEOUT_S = 60
PARAGRAPH = 3000
DLQ = "shield:ingestion_queue:dlq"


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
def worker(redis_server: RedisServer, redis_client: redis.Redis, workers: WorkerProcesses) -> None:
    """A worker whose handler fails the chunks marked to fail."""
    workers.start(
        service_env(
            redis_server.url,
            block_ms=200,
            claim_idle_ms=400,
            task_handler="tests.service.handlers:fail_marked",
        )
    )


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


def test_http_agent_sees_an_interrupt_for_a_dead_lettered_chunk(
    node: str, api: str, worker: None, redis_client: redis.Redis
) -> None:
    document = "fine\n\n" + FAIL_MARK
    result = run_client(node, "run", f"{api}/agui/ingest", "node-run-2", document=document)
    assert result["failure"] is None
    assert result["outcome"] == "RUN_FINISHED"
    [(dead_letter_id, _)] = redis_client.xrange(DLQ)
    assert result["finished"]["outcome"] == "interrupt"
    [interrupt] = result["finished"]["interrupts"]
    assert interrupt["id"] == dead_letter_id
    assert interrupt["reason"] == "dead_lettered"
    assert interrupt["message"] == "RuntimeError: cannot process node-run-2-1"
    assert interrupt["responseSchema"]["properties"]["action"]["enum"] == ["retry", "skip"]
    assert [pending["id"] for pending in result["pendingInterrupts"]] == [dead_letter_id]
    assert result["state"] == {"total": 1, "done": 0, "failed": 1}
    assert result["events"][-1] == "RUN_FINISHED"


def handler_env(redis_server: RedisServer, handler: str) -> dict[str, str]:
    return service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        task_handler=handler,
        retry_backoff_ms=50,
        retry_backoff_max_ms=100,
    )


@pytest.mark.parametrize(
    ("action", "final_state", "dead_letters"),
    [
        ("retry", {"total": 2, "done": 2, "failed": 0}, 0),
        ("skip", {"total": 2, "done": 1, "failed": 1}, 0),
    ],
)
def test_http_agent_resumes_an_interrupted_run(
    node: str,
    api: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: WorkerProcesses,
    action: str,
    final_state: dict[str, int],
    dead_letters: int,
) -> None:
    workers.start(handler_env(redis_server, "tests.service.handlers:fail_marked_first_attempts"))
    document = "a" * PARAGRAPH + "\n\n" + FAIL_MARK + "b" * PARAGRAPH
    run_id = f"node-{action}"
    result = run_client(
        node, "resume", f"{api}/agui/ingest", run_id, f"{run_id}-resume", action, document=document
    )
    first, second = result["first"], result["second"]
    assert first["finished"]["outcome"] == "interrupt"
    assert first["state"] == {"total": 2, "done": 1, "failed": 1}
    # The client's own checks passed the resume (every pending interrupt answered) and the
    # second run's stream; it streamed the same job on to its end.
    assert second["failure"] is None
    assert second["finished"] == {"outcome": "success", "interrupts": []}
    assert second["pendingInterrupts"] == []
    assert second["state"] == final_state
    assert second["events"][0] == "RUN_STARTED"
    assert f"STEP_FINISHED {run_id}-2" in second["events"]
    assert redis_client.xlen(DLQ) == dead_letters
    job = redis_client.hgetall(f"shield:ingestion_queue:jobs:job:{run_id}")
    assert (int(job["done"]), int(job["failed"])) == (final_state["done"], final_state["failed"])


def test_http_agent_sees_a_cancelled_job_as_run_finished_cancelled(
    node: str, api: str, redis_server: RedisServer, workers: list
) -> None:
    workers.start(handler_env(redis_server, "tests.service.job_handlers:hold_until_cancelled"))
    document = "a" * PARAGRAPH + "\n\n" + HOLD_MARK + "b" * PARAGRAPH
    result = run_client(
        node, "cancel", f"{api}/agui/ingest", "node-cancel", "node-cancel-2", document=document
    )
    assert result["failure"] is None
    assert result["deleteStatus"] == 202
    assert result["finished"] == {"outcome": "cancelled", "interrupts": []}
    assert result["events"][-2:] == ["STEP_FINISHED node-cancel-2", "RUN_FINISHED"]
    assert result["state"] == {"total": 2, "done": 1, "failed": 0}
