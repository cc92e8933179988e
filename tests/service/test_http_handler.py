"""The ``http:<url>`` handler, run by the real worker against a scripted stand-in service.

The stand-in plays the customer's service; what is under test is the worker's side: the
request it sends, and what each answer does to the task (acked, deferred, retried, dead).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis

from harness.ports import free_port
from harness.redis_server import RedisServer
from harness.waiting import wait_until
from service.tasks.task_format import task_fields
from tests.support.http_standin import HttpStandin, Reply
from tests.support.live_server import http, wait_for
from tests.support.processes import WorkerProcesses, service_env
from tests.support.task_events import completed_chunks, events_of_type, settled
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


def http_env(redis_server: RedisServer, base_url: str, **settings: object) -> dict[str, str]:
    """A worker with the http handler pointed at base_url's /hook, with a password in the
    URL, a secret in its query and a token: none of them may be shown."""
    host_port = base_url.removeprefix("http://")
    url = f"http://shield:{URL_PASSWORD}@{host_port}/hook?key={QUERY_SECRET}"
    return service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        task_handler=f"http:{url}",
        handler_token=TOKEN,
        **settings,
    )


def enqueue(client: redis.Redis, chunk_id: str = "chunk-1", **values: object) -> str:
    fields = task_fields(
        job_id="job-7",
        chunk_id=chunk_id,
        content="Ada Lovelace wrote the first program.",
        source_uri="s3://docs/notes.txt",
        source_type="text",
        metadata={"page": 3},
        **values,
    )
    entry_id: str = client.xadd(QUEUE, fields)
    return entry_id


def wait_until_reading(client: redis.Redis) -> None:
    """Until the worker has announced itself, just before its first read: a test that times
    a task from its enqueue leaves the worker's start out of it."""
    wait_until(
        lambda: events_of_type(client, "worker.started"),
        timeout_s=20,
        describe="the worker to announce worker.started",
    )


def retry_delays_s(client: redis.Redis) -> list[float]:
    """Each deferral's wait as the worker chose it: its ingestion.failed event's retry_at
    less the event's own time, both from the worker's clock, so load cannot stretch them."""
    return [
        (
            datetime.fromisoformat(json.loads(fields["data"])["retry_at"])
            - datetime.fromisoformat(fields["timestamp"])
        ).total_seconds()
        for fields in events_of_type(client, "ingestion.failed")
        if "retry_at" in json.loads(fields["data"])
    ]


def assert_no_secret_shown(client: redis.Redis, worker_log: str) -> None:
    """Neither the token nor the URL's password or query is in the log, an event or a
    dead letter."""
    shown = [worker_log]
    shown += [json.dumps(fields) for _, fields in client.xrange(EVENTS)]
    shown += [json.dumps(fields) for _, fields in client.xrange(DLQ)]
    for secret in SECRETS:
        assert not any(secret in text for text in shown), secret


def test_a_2xx_acks_and_each_attempt_posts_the_payload_with_a_stable_key_and_the_token(
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with HttpStandin(Reply(500, "try again"), Reply(200)) as service:
        workers.start(http_env(redis_server, service.url))
        first_id = enqueue(redis_client)
        wait_for(lambda: completed_chunks(redis_client) == ["chunk-1"], timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = workers.stop_all()

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
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    body = f"chunk refused for Bearer {TOKEN}: " + "y" * 300
    with HttpStandin(Reply(400, body)) as service:
        workers.start(http_env(redis_server, service.url))
        enqueue(redis_client)
        wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = workers.stop_all()

    assert len(service.received) == 1
    [(_, letter)] = redis_client.xrange(DLQ)
    excerpt = ("chunk refused for Bearer [redacted]: " + "y" * 300)[:200]
    assert letter["dlq_reason"] == (f"the handler at {service.url}/hook answered 400: {excerpt}")
    assert letter["dlq_attempts"] == "1"
    [dead] = events(redis_client, "ingestion.dead_lettered")
    assert dead["attempts"] == 1 and dead["error"] == letter["dlq_reason"]
    assert_no_secret_shown(redis_client, log)


def test_a_429_with_retry_after_comes_back_a_second_later_without_counting_an_attempt(
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with HttpStandin(Reply(429, "busy", {"Retry-After": "1"}), Reply(200)) as service:
        workers.start(http_env(redis_server, service.url))
        enqueue(redis_client)
        wait_for(lambda: completed_chunks(redis_client) == ["chunk-1"], timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = workers.stop_all()

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
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with HttpStandin(Reply(500, "database down")) as service:
        workers.start(http_env(redis_server, service.url))
        enqueue(redis_client)
        wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = workers.stop_all()

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
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with HttpStandin(Reply(200, delay_s=3.0), Reply(200)) as service:
        workers.start(http_env(redis_server, service.url, handler_timeout_s=0.5))
        enqueue(redis_client)
        wait_for(lambda: completed_chunks(redis_client) == ["chunk-1"], timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = workers.stop_all()

    [failed] = events(redis_client, "ingestion.failed")
    assert failed["attempt"] == 1 and failed["retrying"] is True
    assert failed["error"] == f"the handler at {service.url}/hook did not answer in time"
    assert [request.body["retry_count"] for request in service.received] == [0, 1]
    assert redis_client.xlen(DLQ) == 0
    assert_no_secret_shown(redis_client, log)


def test_a_refused_connection_is_a_failed_attempt_until_the_last(
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    workers.start(http_env(redis_server, nobody))
    enqueue(redis_client)
    wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=15)
    wait_for(lambda: settled(redis_client))
    log = workers.stop_all()

    [(_, letter)] = redis_client.xrange(DLQ)
    assert letter["dlq_attempts"] == "3"
    assert letter["dlq_reason"].startswith(
        f"cannot reach the handler at {nobody}/hook: ConnectError"
    )
    failed = events(redis_client, "ingestion.failed")
    assert [data["attempt"] for data in failed] == [1, 2, 3]
    assert_no_secret_shown(redis_client, log)


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_answer_without_retry_after_backs_off_by_growing_amounts_without_counting(
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis, status: int
) -> None:
    busy = [Reply(status, "busy")] * 4
    with HttpStandin(*busy, Reply(200)) as service:
        workers.start(
            http_env(redis_server, service.url, retry_backoff_ms=200, retry_backoff_max_ms=5000)
        )
        enqueue(redis_client)
        wait_for(lambda: completed_chunks(redis_client) == ["chunk-1"], timeout_s=30)
        wait_for(lambda: settled(redis_client))
        log = workers.stop_all()

    # Five requests, none of them a counted attempt; each re-added entry counts its deferral.
    assert [request.body["retry_count"] for request in service.received] == [0] * 5
    entries = [fields for _, fields in redis_client.xrange(QUEUE)]
    assert [fields.get("busy_count") for fields in entries] == [None, "1", "2", "3", "4"]
    assert {fields["retry_count"] for fields in entries} == {"0"}
    failed = events(redis_client, "ingestion.failed")
    assert [(data["attempt"], data["busy"], data["retrying"]) for data in failed] == [
        (0, True, True)
    ] * 4
    assert {data["error"] for data in failed} == {
        f"the handler at {service.url}/hook answered {status}: busy"
    }
    # The n-th busy deferral waits 0.5-1x of 200 ms × 2^(n-1), as the n-th retry would:
    # 100-200, 200-400, 400-800, 800-1600 ms. The event's time is read just after the due
    # time was set, so a delay read from it can only be shorter, by the time between the two
    # readings (20 ms allowed); it never exceeds the ceiling (1 ms for rounding).
    delays_s = retry_delays_s(redis_client)
    assert len(delays_s) == 4
    for n, delay_s in enumerate(delays_s, start=1):
        ceiling_s = 0.2 * 2 ** (n - 1)
        assert ceiling_s / 2 - 0.02 <= delay_s <= ceiling_s + 0.001, (n, delays_s)
    # And the service saw the waits: each request came no sooner than its retry was due.
    gaps_s = [b.at - a.at for a, b in zip(service.received, service.received[1:], strict=False)]
    assert all(gap >= delay - 0.01 for gap, delay in zip(gaps_s, delays_s, strict=True)), gaps_s
    assert redis_client.xlen(DLQ) == 0
    assert_no_secret_shown(redis_client, log)


def test_a_task_busy_for_longer_than_lease_max_ms_is_dead_lettered_before_it_would_pass_it(
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    lease_max_ms = 2000
    with HttpStandin(Reply(429, "busy")) as service:
        workers.start(
            http_env(
                redis_server,
                service.url,
                retry_backoff_ms=200,
                retry_backoff_max_ms=5000,
                lease_max_ms=lease_max_ms,
            )
        )
        wait_until_reading(redis_client)
        queued_at = datetime.now(UTC)
        enqueue(redis_client, timestamp=queued_at.isoformat())
        wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=15)
        dead_at = datetime.now(UTC)
        wait_for(lambda: settled(redis_client))
        log = workers.stop_all()

    # Deferred while its next try still fell within lease_max_ms of its queueing; then
    # dead-lettered at once, not after one more wait. Never a counted attempt until then.
    received = service.received
    assert len(received) >= 3
    assert {request.body["retry_count"] for request in received} == {0}
    assert received[-1].at - received[0].at <= lease_max_ms / 1000
    assert (dead_at - queued_at).total_seconds() < lease_max_ms / 1000 + 1.0
    [(_, letter)] = redis_client.xrange(DLQ)
    assert letter["dlq_reason"] == (
        f"busy for longer than lease_max_ms ({lease_max_ms}): "
        f"the handler at {service.url}/hook answered 429: busy"
    )
    assert letter["dlq_attempts"] == "1"
    assert letter["busy_count"] == str(len(received) - 1)
    failed = events(redis_client, "ingestion.failed")
    assert [data["retrying"] for data in failed] == [True] * (len(received) - 1) + [False]
    [dead] = events(redis_client, "ingestion.dead_lettered")
    assert dead["attempts"] == 1 and dead["error"] == letter["dlq_reason"]
    assert_no_secret_shown(redis_client, log)


def test_a_dead_letter_requeued_long_after_it_was_queued_may_be_busy_again(
    workers: WorkerProcesses, redis_server: RedisServer, redis_client: redis.Redis, api: str
) -> None:
    """Busy for longer than lease_max_ms (1 h) since it was queued, it is dead-lettered on
    its first 429; requeued, its first 429 defers it, and it completes."""
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    with HttpStandin(Reply(429, "busy"), Reply(429, "busy"), Reply(200)) as service:
        workers.start(http_env(redis_server, service.url))
        enqueue(redis_client, timestamp=two_hours_ago)
        wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=15)
        [(letter_id, letter)] = redis_client.xrange(DLQ)
        assert letter["dlq_reason"].startswith("busy for longer than lease_max_ms (3600000)")
        with http(api) as client:
            requeued = client.post(f"/tasks/dead-letters/{letter_id}/requeue")
        assert requeued.status_code == 201, requeued.text
        wait_for(lambda: completed_chunks(redis_client) == ["chunk-1"], timeout_s=15)
        wait_for(lambda: settled(redis_client))
        log = workers.stop_all()

    assert len(service.received) == 3
    assert redis_client.xlen(DLQ) == 0
    busy = [data for data in events(redis_client, "ingestion.failed") if data["retrying"]]
    assert len(busy) == 1 and busy[0]["busy"] is True
    assert service.received[1].body["timestamp"] != two_hours_ago
    assert_no_secret_shown(redis_client, log)
