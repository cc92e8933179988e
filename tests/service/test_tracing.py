"""Trace context through the queue: from the POST, through the worker's attempt at the task and
the handler's request, to the task's events.

The client's span is recorded by the SDK's InMemorySpanExporter in this process; the worker,
a real subprocess, exports its spans over OTLP/HTTP to a stand-in collector that decodes the
protobuf, as a real collector would. The handler's service is the http stand-in.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from service.core import names
from service.core.trace_context import TraceParent, parse_traceparent
from service.tasks.handlers.context import HandlerContext
from service.tasks.handlers.lightrag_handler import LightRagHandler
from tests.service.handlers import TRACES_KEY
from tests.support.agui_input import run_input
from tests.support.http_standin import HttpStandin, Reply
from tests.support.otlp_collector import CollectedSpan, OtlpCollector
from tests.support.processes import WorkerProcesses, service_env
from tests.support.task_events import completed_chunks, settled

SPAN_NAME = f"process {names.INGESTION_STREAM}"
DLQ = names.dead_letter_stream(names.INGESTION_STREAM)
FOREIGN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def worker_env(
    redis_url: str, task_handler: str, otlp_endpoint: str | None = None
) -> dict[str, str]:
    """A worker with this handler, exporting its spans to otlp_endpoint when given."""
    env = service_env(redis_url, block_ms=200, claim_idle_ms=400, task_handler=task_handler)
    env = {key: value for key, value in env.items() if not key.startswith("OTEL_")}
    if otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
        env["OTEL_BSP_SCHEDULE_DELAY"] = "50"
    return env


@pytest.fixture
def client_spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """The test client's own tracer, recording in memory (not the global provider)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def post_traced_task(
    api: str, provider: TracerProvider, chunk_id: str = "chunk-1"
) -> tuple[str, str]:
    """POST /tasks inside a client span, its traceparent in the header: the entry id, and
    the header."""
    tracer = provider.get_tracer("test-client")
    with tracer.start_as_current_span("POST /tasks", kind=SpanKind.CLIENT) as span:
        headers: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(headers)
        answer = httpx.post(
            f"{api}/tasks",
            json={"job_id": "job-t", "chunk_id": chunk_id, "content": "Ada"},
            headers=headers,
        )
    assert answer.status_code == 201, answer.text
    context = span.get_span_context()
    header = headers["traceparent"]
    assert header.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    return answer.json()["id"], header


def parsed(header: str | None) -> TraceParent:
    value = parse_traceparent(header or "")
    assert value is not None, header
    return value


def events_of(client: redis.Redis, event_type: str) -> list[dict[str, object]]:
    """Every event of a type, with its data and metadata decoded."""
    return [
        {"data": json.loads(fields["data"]), "metadata": json.loads(fields["metadata"])}
        for _, fields in client.xrange(names.EVENTS_STREAM)
        if fields["type"] == event_type
    ]


def test_one_trace_runs_from_the_post_through_the_handler_call_to_the_completion_event(
    api: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: WorkerProcesses,
    client_spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = client_spans
    with OtlpCollector() as collector, HttpStandin(Reply(200)) as service:
        workers.start(worker_env(redis_server.url, f"http:{service.url}/hook", collector.endpoint))
        entry_id, header = post_traced_task(api, provider)
        wait_until(lambda: completed_chunks(redis_client) == ["chunk-1"], 15)
        wait_until(lambda: collector.spans, 10, describe="the worker to export its span")
        workers.stop_all()

    # The client's span, as the in-memory exporter recorded it, is the root of the trace.
    (client_span,) = exporter.get_finished_spans()
    assert client_span.name == "POST /tasks" and client_span.parent is None
    trace_id, client_span_id = parsed(header).trace_id, parsed(header).parent_id
    # Kept with the task as sent.
    ((_, fields),) = redis_client.xrange(names.INGESTION_STREAM, entry_id, entry_id)
    assert fields["traceparent"] == header

    # One span for the one attempt, the child of the client's span, exported over OTLP.
    (attempt,) = collector.spans
    assert attempt == CollectedSpan(
        service_name="shield-orchestrator-worker",
        name=SPAN_NAME,
        kind="SPAN_KIND_CONSUMER",
        trace_id=trace_id,
        span_id=attempt.span_id,
        parent_span_id=client_span_id,
        attributes={
            "messaging.operation.type": "process",
            "messaging.destination.name": names.INGESTION_STREAM,
            "messaging.consumer.group.name": names.WORKER_GROUP,
            "messaging.message.id": entry_id,
            "shield.job_id": "job-t",
            "shield.chunk_id": "chunk-1",
            "shield.attempt": 1,
            "shield.outcome": "done",
        },
        status_code="STATUS_CODE_UNSET",
        status_message="",
    )
    # The handler's request names the attempt's span as its parent.
    (request,) = service.received
    forwarded = parsed(request.headers["traceparent"])
    assert (forwarded.trace_id, forwarded.parent_id, forwarded.sampled) == (
        trace_id,
        attempt.span_id,
        True,
    )
    assert "traceparent" not in request.body
    # Every event written for the task carries the trace.
    for event_type in ("ingestion.queued", "ingestion.started", "ingestion.completed"):
        (event,) = events_of(redis_client, event_type)
        assert event["metadata"] == {"traceparent": header}, event_type


def test_a_job_posted_in_a_trace_ends_it_with_job_completed(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: WorkerProcesses
) -> None:
    """POST /jobs under a traceparent: every chunk's events and the job's own completion
    carry it, so one trace runs from the POST to job.completed."""
    with HttpStandin(Reply(200), Reply(200)) as service:
        workers.start(worker_env(redis_server.url, f"http:{service.url}/hook"))
        body = {
            "job_id": "traced-doc",
            "chunks": [{"chunk_id": f"c{n}", "content": "Ada"} for n in range(2)],
        }
        answer = httpx.post(f"{api}/jobs", json=body, headers={"traceparent": FOREIGN})
        assert answer.status_code == 201, answer.text
        wait_until(lambda: events_of(redis_client, "job.completed"), 15)
        workers.stop_all()
    (completed,) = events_of(redis_client, "job.completed")
    assert completed["metadata"] == {"traceparent": FOREIGN}
    assert completed["data"] == {"total": 2, "done": 2, "failed": 0, "cancelled": 0}
    for event_type in ("ingestion.queued", "ingestion.completed"):
        assert {json.dumps(event["metadata"]) for event in events_of(redis_client, event_type)} == {
            json.dumps({"traceparent": FOREIGN})
        }, event_type
    # Each forwarded header continues the same trace.
    assert {parsed(request.headers["traceparent"]).trace_id for request in service.received} == {
        parsed(FOREIGN).trace_id
    }


def test_each_attempt_is_a_span_and_a_failed_one_has_status_error(
    api: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: WorkerProcesses,
    client_spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = client_spans
    with OtlpCollector() as collector, HttpStandin(Reply(500, "down"), Reply(200)) as service:
        workers.start(worker_env(redis_server.url, f"http:{service.url}/hook", collector.endpoint))
        _, header = post_traced_task(api, provider)
        wait_until(lambda: completed_chunks(redis_client) == ["chunk-1"], 15)
        wait_until(lambda: len(collector.spans) == 2, 10, describe="two attempt spans")
        workers.stop_all()

    trace_id, client_span_id = parsed(header).trace_id, parsed(header).parent_id
    first, second = sorted(collector.spans, key=lambda span: span.attributes["shield.attempt"])
    assert {first.trace_id, second.trace_id} == {trace_id}
    assert {first.parent_span_id, second.parent_span_id} == {client_span_id}
    assert (first.attributes["shield.attempt"], second.attributes["shield.attempt"]) == (1, 2)
    assert first.status_code == "STATUS_CODE_ERROR" and "500" in first.status_message
    assert first.attributes["shield.outcome"] == "failed"
    assert second.status_code == "STATUS_CODE_UNSET"
    assert second.attributes["shield.outcome"] == "done"
    forwarded = [parsed(request.headers["traceparent"]) for request in service.received]
    assert [(tp.trace_id, tp.parent_id) for tp in forwarded] == [
        (trace_id, span.span_id) for span in (first, second)
    ]
    (failed,) = events_of(redis_client, "ingestion.failed")
    assert failed["metadata"] == {"traceparent": header}
    assert failed["data"]["retrying"] is True  # type: ignore[index]


def test_a_worker_that_does_not_trace_forwards_the_tasks_traceparent_as_it_came(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: WorkerProcesses
) -> None:
    with HttpStandin(Reply(200)) as service:
        workers.start(worker_env(redis_server.url, f"http:{service.url}/hook"))
        traced = {"job_id": "job-u", "chunk_id": "traced", "content": "Ada"}
        untraced = {**traced, "chunk_id": "untraced"}
        assert httpx.post(f"{api}/tasks", json=traced, headers={"traceparent": FOREIGN}).is_success
        assert httpx.post(f"{api}/tasks", json=untraced).is_success
        wait_until(lambda: sorted(completed_chunks(redis_client)) == ["traced", "untraced"], 15)
        wait_until(lambda: settled(redis_client))
        workers.stop_all()

    forwarded = {
        request.body["chunk_id"]: request.headers.get("traceparent") for request in service.received
    }
    assert forwarded == {"traced": FOREIGN, "untraced": None}
    # Tasks of one job under different traces get events of their own.
    for event in events_of(redis_client, "ingestion.completed"):
        chunk_ids = event["data"]["chunk_ids"]  # type: ignore[index]
        expected = {"traceparent": FOREIGN} if chunk_ids == ["traced"] else {}
        assert chunk_ids in (["traced"], ["untraced"])
        assert event["metadata"] == expected


def test_a_sync_python_handler_runs_with_the_attempts_span_current(
    api: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: WorkerProcesses,
    client_spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = client_spans
    with OtlpCollector() as collector:
        workers.start(
            worker_env(
                redis_server.url, "python:tests.service.handlers:record_trace", collector.endpoint
            )
        )
        _, header = post_traced_task(api, provider)
        wait_until(lambda: redis_client.llen(TRACES_KEY) == 1, 15)
        wait_until(lambda: collector.spans, 10, describe="the worker to export its span")
        workers.stop_all()

    (attempt,) = collector.spans
    seen = json.loads(redis_client.lindex(TRACES_KEY, 0) or "{}")
    assert seen["current"] == f"{parsed(header).trace_id}-{attempt.span_id}"
    assert parsed(seen["context"]).parent_id == attempt.span_id


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", None),  # upper case
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        ("not-a-traceparent", None),
        # A later version is kept in its version-00 form.
        (FOREIGN.replace("00-", "01-", 1) + "-future", FOREIGN),
    ],
)
def test_a_malformed_traceparent_is_ignored_and_the_task_is_queued_untraced(
    api: str, redis_client: redis.Redis, header: str, kept: str | None
) -> None:
    task = {"job_id": "job-m", "chunk_id": "c", "content": "Ada"}
    answer = httpx.post(f"{api}/tasks", json=task, headers={"traceparent": header})
    assert answer.status_code == 201, answer.text
    ((_, fields),) = redis_client.xrange(names.INGESTION_STREAM)
    assert fields.get("traceparent") == kept
    (queued,) = events_of(redis_client, "ingestion.queued")
    assert queued["metadata"] == ({"traceparent": kept} if kept else {})


def test_an_agui_run_carries_its_traceparent_to_every_chunk_and_the_handler(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: WorkerProcesses
) -> None:
    document = ("A paragraph of the document. " * 100 + "\n\n") * 3  # three chunks
    with HttpStandin(Reply(200)) as service:
        workers.start(worker_env(redis_server.url, f"http:{service.url}/hook"))
        with httpx.stream(
            "POST",
            f"{api}/agui/ingest",
            json=run_input("run-traced", document),
            headers={"traceparent": FOREIGN, "Accept": "text/event-stream"},
            timeout=30,
        ) as response:
            assert response.status_code == 200
            frames = "".join(response.iter_text())
        workers.stop_all()

    assert "RUN_FINISHED" in frames
    chunk_ids = {fields["chunk_id"] for _, fields in redis_client.xrange(names.INGESTION_STREAM)}
    assert len(service.received) == len(chunk_ids) == 3
    assert {request.headers["traceparent"] for request in service.received} == {FOREIGN}
    queued = events_of(redis_client, "ingestion.queued")
    assert [event["metadata"] for event in queued] == [{"traceparent": FOREIGN}] * 3


class LightRagStandin:
    """LightRAG Server 1.5.7's insert and track answers for one chunk, recording each
    request's traceparent: LightRAG itself shows no request headers."""

    def __init__(self) -> None:
        self.traceparents: list[tuple[str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.traceparents.append((request.url.path, request.headers.get("traceparent")))
        if request.url.path == "/documents/text":
            return httpx.Response(200, json={"status": "success", "track_id": "insert_1"})
        document = {"id": "doc-1", "status": "processed", "track_id": "insert_1"}
        return httpx.Response(200, json={"track_id": "insert_1", "documents": [document]})


@pytest.mark.parametrize("traceparent", [FOREIGN, ""])
async def test_the_lightrag_handler_sends_the_attempts_traceparent_with_every_request(
    traceparent: str,
) -> None:
    standin = LightRagStandin()
    client = httpx.AsyncClient(transport=httpx.MockTransport(standin))
    handler = LightRagHandler("http://lightrag.invalid", client, "key", timeout_s=5)
    payload = {"job_id": "job-l", "chunk_id": "c1", "content": "Ada", "source_uri": ""}
    context = HandlerContext("1-0", "job-l", "c1", "key", lambda fraction, message: None)
    await handler(payload, dataclasses.replace(context, traceparent=traceparent))
    await handler.aclose()
    assert standin.traceparents == [
        ("/documents/text", traceparent or None),
        ("/documents/track_status/insert_1", traceparent or None),
    ]


def test_a_dead_letter_and_its_requeue_keep_the_tasks_traceparent(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: WorkerProcesses
) -> None:
    with HttpStandin(Reply(400, "no such index"), Reply(200)) as service:
        workers.start(worker_env(redis_server.url, f"http:{service.url}/hook"))
        task = {"job_id": "job-d", "chunk_id": "c1", "content": "Ada"}
        assert httpx.post(f"{api}/tasks", json=task, headers={"traceparent": FOREIGN}).is_success
        wait_until(lambda: redis_client.xlen(DLQ) == 1, 15)
        ((letter_id, letter),) = redis_client.xrange(DLQ)
        assert letter["traceparent"] == FOREIGN
        requeued = httpx.post(f"{api}/tasks/dead-letters/{letter_id}/requeue")
        assert requeued.status_code == 201, requeued.text
        wait_until(lambda: completed_chunks(redis_client) == ["c1"], 15)
        workers.stop_all()

    assert [request.headers["traceparent"] for request in service.received] == [FOREIGN] * 2
    (dead,) = events_of(redis_client, "ingestion.dead_lettered")
    assert dead["metadata"] == {"traceparent": FOREIGN}
    (completed,) = events_of(redis_client, "ingestion.completed")
    assert completed["metadata"] == {"traceparent": FOREIGN}
