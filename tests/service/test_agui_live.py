"""POST /agui/ingest over real HTTP, with a real redis-server and a real worker process."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tests.service.handlers import FAIL_MARK, HANDLED_KEY, HOLD_MARK, RELEASE_KEY
from tests.support.agui_input import run_input
from tests.support.agui_stream import agui_run, assert_steps_pair_up, brief, final_state
from tests.support.live_server import serve
from tests.support.processes import service_env, start_worker
from tests.support.service_settings import make_settings

QUEUE = "shield:ingestion_queue"
DLQ = "shield:ingestion_queue:dlq"
EVENTS = "shield:events"
# Three paragraphs of 3,000 characters: the 4,000-character rule cuts after each blank line.
PARAGRAPH = 3000


def three_chunk_document(middle_mark: str = "") -> str:
    middle = middle_mark + "b" * (PARAGRAPH - len(middle_mark))
    return "a" * PARAGRAPH + "\n\n" + middle + "\n\n" + "c" * PARAGRAPH


def stream_events(client: redis.Redis, event_type: str, job_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(fields["data"])
        for _, fields in client.xrange(EVENTS)
        if fields["type"] == event_type and fields["job_id"] == job_id
    ]


def worker_env(redis_server: RedisServer, handler: str, **settings: object) -> dict[str, str]:
    return service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        task_handler=f"tests.service.handlers:{handler}",
        **settings,
    )


def test_a_multi_chunk_document_streams_as_one_run(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    document = three_chunk_document()
    with agui_run(api, run_input("run-a", document)) as reader:
        assert reader.take(2) == [
            {"type": "RUN_STARTED", "threadId": "thread-1", "runId": "run-a"},
            {"type": "STATE_SNAPSHOT", "snapshot": {"total": 3, "done": 0, "failed": 0}},
        ]
        # Started only now, so it takes all three tasks in one batch, and runs them on its
        # loop (an async handler), where they finish in the same turn: the order is exact.
        workers.append(start_worker(worker_env(redis_server, "record_async")))
        rest = reader.until_end()
    assert [brief(event) for event in rest] == [
        "STEP_STARTED run-a-1",
        "STEP_STARTED run-a-2",
        "STEP_STARTED run-a-3",
        "STEP_FINISHED run-a-1",
        "STEP_FINISHED run-a-2",
        "STEP_FINISHED run-a-3",
        "STATE_DELTA /done=3",
        "RUN_FINISHED",
    ]
    assert rest[-1] == {
        "type": "RUN_FINISHED",
        "threadId": "thread-1",
        "runId": "run-a",
        "result": {"total": 3, "done": 3, "failed": 0},
    }
    tasks = [fields for _, fields in redis_client.xrange(QUEUE)]
    assert [task["chunk_id"] for task in tasks] == ["run-a-1", "run-a-2", "run-a-3"]
    assert {task["job_id"] for task in tasks} == {"run-a"}
    assert {task["source_uri"] for task in tasks} == {"file:///doc.txt"}
    assert "".join(task["content"] for task in tasks) == document
    assert redis_client.lrange(HANDLED_KEY, 0, -1) == ["run-a-1", "run-a-2", "run-a-3"]
    # Kept as long as a finished job (SHIELD_JOB_TTL_S, 7 days by default).
    assert 0 < redis_client.ttl("shield:agui:run:run-a") <= 7 * 24 * 3600
    assert redis_client.get("shield:agui:thread:thread-1") == "run-a"


def test_a_client_that_drops_re_attaches_without_a_second_enqueue(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    body = run_input("run-b", three_chunk_document(middle_mark=HOLD_MARK))
    with agui_run(api, body) as reader:
        assert [brief(event) for event in reader.take(2)] == [
            "RUN_STARTED",
            'STATE_SNAPSHOT {"done": 0, "failed": 0, "total": 3}',
        ]
    # The client is gone. One task per batch, and the second one is held: the run is midway.
    env = worker_env(redis_server, "hold_marked", batch_size=1, worker_concurrency=1)
    workers.append(start_worker(env))
    wait_until(lambda: stream_events(redis_client, "ingestion.completed", "run-b"))
    wait_until(lambda: len(stream_events(redis_client, "ingestion.started", "run-b")) == 2)

    with agui_run(api, body) as reader:
        # The snapshot is the job state; the chunk done before this stream began still gets
        # both its steps.
        assert [brief(event) for event in reader.take(5)] == [
            "RUN_STARTED",
            'STATE_SNAPSHOT {"done": 1, "failed": 0, "total": 3}',
            "STEP_STARTED run-b-1",
            "STEP_FINISHED run-b-1",
            "STEP_STARTED run-b-2",
        ]
        redis_client.set(RELEASE_KEY, "1")
        rest = reader.until_end()
    assert [brief(event) for event in rest] == [
        "STEP_FINISHED run-b-2",
        "STATE_DELTA /done=2",
        "STEP_STARTED run-b-3",
        "STEP_FINISHED run-b-3",
        "STATE_DELTA /done=3",
        "RUN_FINISHED",
    ]
    assert redis_client.xlen(QUEUE) == 3
    assert redis_client.lrange(HANDLED_KEY, 0, -1) == ["run-b-1", "run-b-2", "run-b-3"]

    # Once more after the end: the whole story in a snapshot, and nothing enqueued.
    with agui_run(api, body) as reader:
        assert [brief(event) for event in reader.until_end()] == [
            "RUN_STARTED",
            'STATE_SNAPSHOT {"done": 3, "failed": 0, "total": 3}',
            "STEP_STARTED run-b-1",
            "STEP_FINISHED run-b-1",
            "STEP_STARTED run-b-2",
            "STEP_FINISHED run-b-2",
            "STEP_STARTED run-b-3",
            "STEP_FINISHED run-b-3",
            "RUN_FINISHED",
        ]
    assert redis_client.xlen(QUEUE) == 3

    other = run_input("run-b", "another document")
    with httpx.Client(base_url=api) as client:
        refused = client.post("/agui/ingest", json=other)
    assert refused.status_code == 409
    assert "different document" in refused.json()["detail"]
    assert redis_client.xlen(QUEUE) == 3


def test_a_chunk_that_keeps_failing_ends_the_run_with_an_interrupt_naming_its_dead_letter(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    workers.append(start_worker(worker_env(redis_server, "fail_marked")))
    document = "x" * PARAGRAPH + "\n\n" + FAIL_MARK + "y" * PARAGRAPH
    with agui_run(api, run_input("run-f", document)) as reader:
        events = reader.until_end()
    assert events[0]["type"] == "RUN_STARTED"
    assert events[1]["type"] == "STATE_SNAPSHOT"
    [(dead_letter_id, _)] = redis_client.xrange(DLQ)
    assert events[-1] == {
        "type": "RUN_FINISHED",
        "threadId": "thread-1",
        "runId": "run-f",
        "result": {"total": 2, "done": 1, "failed": 1},
        "outcome": {
            "type": "interrupt",
            "interrupts": [
                {
                    "id": dead_letter_id,
                    "reason": "dead_lettered",
                    "message": "RuntimeError: cannot process run-f-2",
                    "responseSchema": {
                        "type": "object",
                        "properties": {"action": {"type": "string", "enum": ["retry", "skip"]}},
                        "required": ["action"],
                    },
                    "metadata": {"chunk_id": "run-f-2"},
                }
            ],
        },
    }
    assert final_state(events) == {"total": 2, "done": 1, "failed": 1}
    assert_steps_pair_up(events)
    failures = [event["value"] for event in events if brief(event) == "CUSTOM ingestion.failed"]
    assert [(value["chunk_id"], value["attempt"]) for value in failures] == [
        ("run-f-2", 1),
        ("run-f-2", 2),
        ("run-f-2", 3),
    ]
    dead_letters = [event for event in events if brief(event) == "CUSTOM ingestion.dead_lettered"]
    [dead] = [event["value"] for event in dead_letters]
    assert dead["chunk_id"] == "run-f-2"
    assert dead["error"] == "RuntimeError: cannot process run-f-2"
    assert redis_client.xlen(DLQ) == 1


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 422, "not a RunAgentInput: body: Invalid JSON"),
        (b'{"threadId": "t", "runId": "r"}', 422, "not a RunAgentInput: messages: Field required"),
        (
            json.dumps(run_input("r", "x", messages=[])).encode(),
            422,
            "no user message",
        ),
        (
            json.dumps(run_input("r", "x", forwardedProps={"metadata": [1]})).encode(),
            422,
            "forwardedProps.metadata must be a JSON object",
        ),
        (
            json.dumps(run_input("r", "lone \ud800 surrogate")).encode(),
            422,
            "not a RunAgentInput: body: Invalid JSON",
        ),
        (b'{"threadId": "t", "runId": "r", "messages": ' + b"[" * 3000, 422, "not a RunAgentInput"),
        (json.dumps(run_input("r", "x" * 70000)).encode(), 413, "request body over 65536 bytes"),
    ],
)
def test_bad_input_is_refused_before_anything_is_enqueued(
    api: str, redis_client: redis.Redis, body: bytes, status: int, reason: str
) -> None:
    with httpx.Client(base_url=api) as client:
        reply = client.post(
            "/agui/ingest", content=body, headers={"Content-Type": "application/json"}
        )
    assert reply.status_code == status, reply.text
    assert reply.json()["detail"].startswith(reason), reply.json()
    assert redis_client.xlen(QUEUE) == 0
    assert redis_client.keys("shield:agui:*") == []


def test_ingest_needs_the_token_like_every_other_route(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_server, api_token="agui-token")
    body = run_input("run-t", "a short document")
    with serve(settings) as base_url:
        with httpx.Client(base_url=base_url) as client:
            assert client.post("/agui/ingest", json=body).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert client.post("/agui/ingest", json=body, headers=wrong).status_code == 401
        assert redis_client.xlen(QUEUE) == 0
        with agui_run(base_url, body, token="agui-token") as reader:
            assert reader.take(2)[1]["snapshot"] == {"total": 1, "done": 0, "failed": 0}
    assert redis_client.xlen(QUEUE) == 1


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda client: client.hset("shield:agui:run:run-x", "job", ""),
        lambda client: client.set("shield:agui:run:run-x", "a string"),
    ],
    ids=["no job named", "not a hash"],
)
def test_a_run_key_written_by_someone_else_is_409(
    api: str, redis_client: redis.Redis, corrupt: Any
) -> None:
    corrupt(redis_client)
    with httpx.Client(base_url=api) as client:
        reply = client.post("/agui/ingest", json=run_input("run-x", "document"))
    assert reply.status_code == 409
    assert "holds no readable AG-UI run record" in reply.json()["detail"]
    assert redis_client.xlen(QUEUE) == 0


def test_a_stream_cut_by_the_hub_ends_with_run_error_and_can_re_attach(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_server, client_buffer_events=2)
    body = run_input("run-slow", "a short document")

    def publish(count: int) -> None:
        # One MULTI, so the hub reads them all in one batch, more than the buffer holds.
        with redis_client.pipeline(transaction=True) as transaction:
            for index in range(count):
                data = json.dumps({"index": index})
                transaction.xadd(
                    EVENTS, {"type": "doc.progress", "job_id": "run-slow", "data": data}
                )
            transaction.execute()

    with serve(settings) as base_url:
        with agui_run(base_url, body) as reader:
            reader.take(2)
            publish(1)
            assert brief(reader.next()) == "CUSTOM doc.progress"
            time.sleep(0.5)  # past the catch-up: the subscription is on the hub's live feed
            publish(10)
            events = reader.until_end()
        assert [brief(event) for event in events] == [
            "CUSTOM doc.progress",
            "CUSTOM doc.progress",
            "RUN_ERROR",
        ]
        assert events[-1]["code"] == "stream_interrupted"
        assert "client too slow" in events[-1]["message"]
        with agui_run(base_url, body) as reader:
            assert [brief(event) for event in reader.take(2)] == [
                "RUN_STARTED",
                'STATE_SNAPSHOT {"done": 0, "failed": 0, "total": 1}',
            ]
    assert redis_client.xlen(QUEUE) == 1


def test_a_full_backlog_refuses_the_whole_document_and_a_retry_admits_it(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    body = run_input("run-full", three_chunk_document())
    with serve(make_settings(redis_server, stream_maxlen=2)) as base_url:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            refused = client.post("/agui/ingest", json=body)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "2"
            assert "backlog is full" in refused.json()["detail"]
            # Admitted as POST /jobs admits: all chunks or none.
            assert redis_client.xlen(QUEUE) == 0
            assert not redis_client.exists("shield:ingestion_queue:jobs:job:run-full")
    with serve(make_settings(redis_server, stream_maxlen=3)) as base_url:
        with agui_run(base_url, body) as reader:
            assert brief(reader.take(2)[1]) == 'STATE_SNAPSHOT {"done": 0, "failed": 0, "total": 3}'
    assert [fields["chunk_id"] for _, fields in redis_client.xrange(QUEUE)] == [
        "run-full-1",
        "run-full-2",
        "run-full-3",
    ]
