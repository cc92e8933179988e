"""The ``http:<url>`` handler, run by the real worker against a scripted stand-in service.

The stand-in plays the customer's service; what is under test is the worker's side: the
request it sends, and what each answer does to the task (acked, deferred, retried, dead).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from harness.ports import free_port
from harness.redis_server import RedisServer
from service.tasks.task_format import task_fields
from tests.support.http_standin import HttpStandin, Reply
from tests.support.live_server import wait_for
from tests.support.processes import service_env, start_worker, stop
from tests.support.task_events import completed_chunks, settled
from tests.support.task_events import event_data as events

QUEUE = "shield:ingestion_queue"
DLQ = "shield:ingestion_queue:dlq"
EVENTS = "shield:events"
GROUP = "lightrag-workers"
TOKEN = "tok-3f9a1c77e2"
URL_PASSWORD = "pw-b71d0e4429"
QUERY_SECRET = "q-5c2e88a013"
SECRETS = (TOKEN, URL_PASSWORD, QUERY_SECRET)
PAYLOAD_FIELDS = {
    "message_id", "job_id", "chunk_id", "content", "source_uri", "source_type", "metadata",
    "retry_count", "timestamp",
}  # fmt: skip


class WorkerRun:
    """A worker with the http handler pointed at one URL, its output kept in a file."""

    def __init__(self, redis_url: str, log_path: Path) -> None:
        self.redis_url = redis_url
        self.log_path = log_path
        self.process: subprocess.Popen[str] | None = None

    def start(self, base_url: str, **settings: object) -> None:
        host_port = base_url.removeprefix("http://")
        url = f"http://shield:{URL_PASSWORD}@{host_port}/hook?key={QUERY_SECRET}"
        env = service_env(
            self.redis_url,
            block_ms=200,
            claim_idle_ms=400,
            task_handler=f"http:{url}",
            handler_token=TOKEN,
            **settings,
        )
        with self.log_path.open("w") as log:
            self.process = start_worker(env, log=log)

    def stop(self) -> str:
        """Stop the worker and give its whole output."""
        if self.process is not None:
            stop(self.process)
        return self.log_path.read_text()


@pytest.fixture
def worker(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[WorkerRun]:
    run = WorkerRun(redis_server.url, tmp_path / "worker.log")
    yield run
    if run.process is not None and run.process.poll() is None:
        run.process.kill()
        run.process.wait()


def enqueue(client: redis.Redis, chunk_id: str = "chunk-1") -> str:
    fields = task_fields(
        job_id="job-7",
        chunk_id=chunk_id,
        content="Ada Lovelace wrote the first program.",
        source_uri="s3://docs/notes.txt",
        source_type="text",
        metadata={"page": 3},
    )
    entry_id: str = client.xadd(QUEUE, fields)
    return entry_id


def assert_no_secret_shown(client: redis.Redis, worker_log: str) -> None:
    """Neither the token nor the URL's password or query is in the log, an event or a
    dead letter."""
    shown = [worker_log]
    shown += [json.dumps(fields) for _, fields in client.xrange(EVENTS)]
    shown += [json.dumps(fields) for _, fields in client.xrange(DLQ)]
    for secret in SECRETS:
        assert not any(secret in text for text in shown), secret


def test_a_2xx_acks_and_each_attempt_posts_the_payload_with_a_stable_key_and_the_token(
    worker: WorkerRun, redis_client: redis.Redis
) -> None:
    with HttpStandin(Reply(500, "try again"), Reply(200)) as service:
        worker.start(service.url)
        first_id = enqueue(redis_client)
        wait_for(lambda: completed_chunks(redis_client) == ["chunk-1"], timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = worker.stop()

    first, second = service.received
    assert first.path == f"/hook?key={QUERY_SECRET}"
    assert set(first.body) == PAYLOAD_FIELDS
    assert first.body == {
        "message_id": first_id,
        "job_id": "job-7",
        "chunk_id": "chunk-1",
        "content": "Ada Lovelace wrote the first program.",
        "source_uri": "s3://docs/notes.txt",
        "source_type": "text",
        "metadata": {"page": 3},
        "retry_count": 0,
        "timestamp": first.body["timestamp"],
    }
    # The retry is a new stream entry: a new message_id, one more retry, the same key.
    assert second.body["retry_count"] == 1 and second.body["message_id"] != first_id
    assert {k: v for k, v in second.body.items() if k not in ("retry_count", "message_id")} == {
        k: v for k, v in first.body.items() if k not in ("retry_count", "message_id")
    }
    keys = {request.headers["Idempotency-Key"] for request in service.received}
    assert len(keys) == 1 and len(keys.pop()) >= 32
    # The token wins over the URL's user:password; the password is not sent at all.
    assert {request.headers["Authorization"] for request in service.received} == {f"Bearer {TOKEN}"}
    assert first.headers["Content-Type"] == "application/json"
    assert redis_client.xlen(DLQ) == 0
    assert_no_secret_shown(redis_client, log)


def test_a_400_dead_letters_after_one_attempt_naming_the_status_and_the_body(
    worker: WorkerRun, redis_client: redis.Redis
) -> None:
    body = f"chunk refused for Bearer {TOKEN}: " + "y" * 300
    with HttpStandin(Reply(400, body)) as service:
        worker.start(service.url)
        enqueue(redis_client)
        wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = worker.stop()

    assert len(service.received) == 1
    [(_, letter)] = redis_client.xrange(DLQ)
    excerpt = ("chunk refused for Bearer [redacted]: " + "y" * 300)[:200]
    assert letter["dlq_reason"] == (f"the handler at {service.url}/hook answered 400: {excerpt}")
    assert letter["dlq_attempts"] == "1"
    [dead] = events(redis_client, "ingestion.dead_lettered")
    assert dead["attempts"] == 1 and dead["error"] == letter["dlq_reason"]
    assert_no_secret_shown(redis_client, log)


def test_a_429_with_retry_after_comes_back_a_second_later_without_counting_an_attempt(
    worker: WorkerRun, redis_client: redis.Redis
) -> None:
    with HttpStandin(Reply(429, "busy", {"Retry-After": "1"}), Reply(200)) as service:
        worker.start(service.url)
        enqueue(redis_client)
        wait_for(lambda: completed_chunks(redis_client) == ["chunk-1"], timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = worker.stop()

    first, second = service.received
    assert 0.9 <= second.at - first.at <= 2.5
    assert second.body["retry_count"] == 0
    assert [fields["retry_count"] for _, fields in redis_client.xrange(QUEUE)] == ["0", "0"]
    [failed] = events(redis_client, "ingestion.failed")
    assert failed["retrying"] is True and failed["busy"] is True and failed["attempt"] == 0
    assert failed["error"] == f"the handler at {service.url}/hook answered 429: busy"
    retry_at = datetime.fromisoformat(str(failed["retry_at"]))
    assert retry_at.tzinfo is not None
    assert redis_client.xlen(DLQ) == 0
    assert_no_secret_shown(redis_client, log)


def test_a_500_is_retried_with_backoff_then_dead_lettered_after_three_attempts(
    worker: WorkerRun, redis_client: redis.Redis
) -> None:
    with HttpStandin(Reply(500, "database down")) as service:
        worker.start(service.url)
        enqueue(redis_client)
        wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = worker.stop()

    assert [request.body["retry_count"] for request in service.received] == [0, 1, 2]
    gaps = [b.at - a.at for a, b in zip(service.received, service.received[1:], strict=False)]
    # Backoff base 50 ms in tests: retry n waits 0.5-1x of 50 ms × 2^(n-1).
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05
    [(_, letter)] = redis_client.xrange(DLQ)
    assert letter["dlq_reason"] == f"the handler at {service.url}/hook answered 500: database down"
    assert letter["dlq_attempts"] == "3"
    failed = events(redis_client, "ingestion.failed")
    assert [data["attempt"] for data in failed] == [1, 2, 3]
    assert [data["retrying"] for data in failed] == [True, True, False]
    assert all("retry_at" in data for data in failed[:2])
    assert_no_secret_shown(redis_client, log)


def test_a_service_slower_than_the_handler_timeout_is_a_failed_attempt(
    worker: WorkerRun, redis_client: redis.Redis
) -> None:
    with HttpStandin(Reply(200, delay_s=3.0), Reply(200)) as service:
        worker.start(service.url, handler_timeout_s=0.5)
        enqueue(redis_client)
        wait_for(lambda: completed_chunks(redis_client) == ["chunk-1"], timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = worker.stop()

    [failed] = events(redis_client, "ingestion.failed")
    assert failed["attempt"] == 1 and failed["retrying"] is True
    assert failed["error"] == f"the handler at {service.url}/hook did not answer in time"
    assert [request.body["retry_count"] for request in service.received] == [0, 1]
    assert redis_client.xlen(DLQ) == 0
    assert_no_secret_shown(redis_client, log)


def test_a_refused_connection_is_a_failed_attempt_until_the_last(
    worker: WorkerRun, redis_client: redis.Redis
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    worker.start(nobody)
    enqueue(redis_client)
    wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=15)
    wait_for(lambda: settled(redis_client))
    log = worker.stop()

    [(_, letter)] = redis_client.xrange(DLQ)
    assert letter["dlq_attempts"] == "3"
    assert letter["dlq_reason"].startswith(
        f"cannot reach the handler at {nobody}/hook: ConnectError"
    )
    failed = events(redis_client, "ingestion.failed")
    assert [data["attempt"] for data in failed] == [1, 2, 3]
    assert_no_secret_shown(redis_client, log)
