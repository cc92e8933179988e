"""The ``lightrag:<base-url>`` handler, run by the real worker against the real LightRAG Server
1.5.7, whose LLM and embedding calls go to the OpenAI stand-in.

One LightRAG serves the module (it takes ~10 s to start); each test uses its own job id and
texts, so what one test leaves in LightRAG cannot answer for another.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from harness.redis_server import RedisServer
from service.tasks.handlers.lightrag_handler import document_name
from service.tasks.task_format import task_fields
from tests.support.lightrag_documents import documents_in_status, processed_file_paths
from tests.support.lightrag_server import LightRAGServer, ModelEndpoints
from tests.support.live_server import wait_for
from tests.support.processes import WorkerProcesses, service_env
from tests.support.refusing_llm_standin import RefusingLlmStandin
from tests.support.task_events import completed_chunks, settled
from tests.support.task_events import event_data as events

# Needs LightRAG Server (scripts/install-lightrag): in make test, not in make check.
pytestmark = pytest.mark.lightrag

QUEUE = "shield:ingestion_queue"
DLQ = "shield:ingestion_queue:dlq"
EVENTS = "shield:events"
GROUP = "lightrag-workers"
SOURCE = "s3://docs/handbook.txt"
WORDS = ["Ada", "Babbage", "Curie", "Darwin", "Euler", "Faraday", "Gauss", "Hopper"]


@pytest.fixture(scope="module")
def lightrag(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LightRAGServer, RefusingLlmStandin]]:
    with RefusingLlmStandin() as standin:
        models = ModelEndpoints.of(standin)
        with LightRAGServer(tmp_path_factory.mktemp("lightrag"), models) as server:
            yield server, standin


def lightrag_env(
    redis_server: RedisServer, server: LightRAGServer, api_key: str | None = None
) -> dict[str, str]:
    """A worker whose handler is this LightRAG Server."""
    return service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        task_handler=f"lightrag:{server.base_url}",
        handler_token=api_key or server.api_key,
        handler_timeout_s=60,
    )


def chunk_text(job_id: str, index: int) -> str:
    first, second = WORDS[index % len(WORDS)], WORDS[(index + 3) % len(WORDS)]
    return f"{first} met {second} in {job_id.title()} chapter {index} of the Handbook."


def enqueue(client: redis.Redis, job_id: str, index: int, content: str | None = None) -> str:
    fields = task_fields(
        job_id=job_id,
        chunk_id=f"chunk-{index}",
        content=content or chunk_text(job_id, index),
        source_uri=SOURCE,
        source_type="text",
    )
    entry_id: str = client.xadd(QUEUE, fields)
    return entry_id


def name_of(job_id: str, index: int) -> str:
    return document_name({"source_uri": SOURCE, "job_id": job_id, "chunk_id": f"chunk-{index}"})


def named(server: LightRAGServer, status: str, names: set[str]) -> list[dict[str, object]]:
    documents = documents_in_status(server.base_url, server.api_key, status)
    return [document for document in documents if document["file_path"] in names]


def test_a_jobs_chunks_end_as_processed_documents_and_every_task_is_acked(
    lightrag: tuple[LightRAGServer, RefusingLlmStandin],
    workers: WorkerProcesses,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    server, _ = lightrag
    workers.start(lightrag_env(redis_server, server))
    for index in range(5):
        enqueue(redis_client, "job-a", index)

    wait_for(lambda: len(completed_chunks(redis_client)) == 5, timeout_s=60)
    wait_for(lambda: settled(redis_client))

    names = {name_of("job-a", index) for index in range(5)}
    assert names == {f"handbook.txt@job-a@chunk-{index}" for index in range(5)}
    assert names <= processed_file_paths(server.base_url, server.api_key)
    assert sorted(completed_chunks(redis_client)) == [f"chunk-{index}" for index in range(5)]
    assert redis_client.xlen(DLQ) == 0
    assert events(redis_client, "ingestion.failed") == []


def test_stopping_lightrag_mid_job_delays_the_chunks_but_loses_none(
    lightrag: tuple[LightRAGServer, RefusingLlmStandin],
    workers: WorkerProcesses,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    server, standin = lightrag
    standin.state.delay_s = 0.5  # each model call: a document takes seconds, not one
    try:
        workers.start(lightrag_env(redis_server, server))
        for index in range(5):
            enqueue(redis_client, "job-b", index)
        names = {name_of("job-b", index) for index in range(7)}
        wait_for(lambda: named(server, "processing", names), timeout_s=30)

        server.kill()
        # Two more chunks arrive while LightRAG is away.
        for index in (5, 6):
            enqueue(redis_client, "job-b", index)
        time.sleep(1)
        standin.state.delay_s = 0.0
        server.start()

        wait_for(lambda: len(completed_chunks(redis_client)) == 7, timeout_s=90)
        wait_for(lambda: settled(redis_client))
    finally:
        standin.state.delay_s = 0.0

    assert names <= processed_file_paths(server.base_url, server.api_key)
    assert redis_client.xlen(DLQ) == 0
    # The outage cost time, not attempts: nothing counted a failed attempt.
    counted = [data for data in events(redis_client, "ingestion.failed") if not data.get("busy")]
    assert counted == []
    assert "cannot reach LightRAG" in workers.logs()


def test_chunks_a_lightrag_restart_leaves_in_flight_are_taken_up_with_no_new_insert_to_wake_it(
    lightrag: tuple[LightRAGServer, RefusingLlmStandin],
    workers: WorkerProcesses,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    server, standin = lightrag
    names = {name_of("job-g", index) for index in range(2)}
    standin.state.delay_s = 0.5
    try:
        workers.start(lightrag_env(redis_server, server))
        for index in range(2):
            enqueue(redis_client, "job-g", index)
        wait_for(lambda: named(server, "processing", names), timeout_s=30)
        server.stop()  # SIGTERM: LightRAG leaves the document "processing" and resumes nothing
        standin.state.delay_s = 0.0
        server.start()

        wait_for(lambda: len(completed_chunks(redis_client)) == 2, timeout_s=60)
        wait_for(lambda: settled(redis_client))
    finally:
        standin.state.delay_s = 0.0

    assert {doc["file_path"] for doc in named(server, "processed", names)} == names
    assert redis_client.xlen(DLQ) == 0
    assert [data for data in events(redis_client, "ingestion.failed") if not data.get("busy")] == []
    # Nothing else was inserted after the restart: the handler started the stranded one over.
    assert "to insert it again" in workers.logs()


def test_a_chunk_whose_worker_died_is_finished_by_another_following_the_same_document(
    lightrag: tuple[LightRAGServer, RefusingLlmStandin],
    workers: WorkerProcesses,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    server, standin = lightrag
    names = {name_of("job-f", index) for index in range(3)}
    standin.state.delay_s = 0.3
    try:
        workers.start(lightrag_env(redis_server, server))
        for index in range(3):
            enqueue(redis_client, "job-f", index)
        wait_for(lambda: named(server, "processing", names), timeout_s=30)
        workers[0].kill()
        workers[0].wait()
        # The successor reclaims them, and LightRAG answers its inserts 409: it holds them.
        workers.start(lightrag_env(redis_server, server))
        wait_for(lambda: len(completed_chunks(redis_client)) == 3, timeout_s=60)
        # Done only once processed: the 409 "(Status: processing)" was followed, not taken.
        assert {doc["file_path"] for doc in named(server, "processed", names)} == names
    finally:
        standin.state.delay_s = 0.0
    wait_for(lambda: settled(redis_client))
    assert named(server, "failed", names) == []
    assert redis_client.xlen(DLQ) == 0


def test_a_wrong_api_key_dead_letters_each_task_after_one_attempt(
    lightrag: tuple[LightRAGServer, RefusingLlmStandin],
    workers: WorkerProcesses,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    server, _ = lightrag
    workers.start(lightrag_env(redis_server, server, api_key="not-the-key-8d1e"))
    for index in range(2):
        enqueue(redis_client, "job-c", index)

    wait_for(lambda: redis_client.xlen(DLQ) == 2, timeout_s=30)
    wait_for(lambda: settled(redis_client))
    workers.stop_all()

    for _, letter in redis_client.xrange(DLQ):
        assert letter["dlq_attempts"] == "1"
        assert letter["dlq_reason"] == (
            f'LightRAG at {server.base_url} answered 403: {{"detail":"Invalid API Key"}}'
        )
    shown = workers.logs() + json.dumps(redis_client.xrange(EVENTS))
    assert "not-the-key-8d1e" not in shown


def test_a_chunk_lightrag_already_holds_is_done_whether_by_name_or_by_content(
    lightrag: tuple[LightRAGServer, RefusingLlmStandin],
    workers: WorkerProcesses,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    server, _ = lightrag
    workers.start(lightrag_env(redis_server, server))
    enqueue(redis_client, "job-d", 0)
    wait_for(lambda: completed_chunks(redis_client) == ["chunk-0"], timeout_s=60)

    # The same chunk again (a requeue): LightRAG answers 409 "(Status: processed)".
    started = time.monotonic()
    enqueue(redis_client, "job-d", 0)
    wait_for(lambda: completed_chunks(redis_client) == ["chunk-0"] * 2, timeout_s=30)
    requeue_s = time.monotonic() - started
    # Another chunk with the same text: LightRAG marks it a duplicate of chunk-0's document.
    enqueue(redis_client, "job-d", 1, content=chunk_text("job-d", 0))
    wait_for(lambda: len(completed_chunks(redis_client)) == 3, timeout_s=30)
    wait_for(lambda: settled(redis_client))

    first, second = name_of("job-d", 0), name_of("job-d", 1)
    assert [doc["file_path"] for doc in named(server, "processed", {first, second})] == [first]
    [duplicate] = named(server, "failed", {first, second})
    assert duplicate["file_path"] == second
    assert duplicate["metadata"]["is_duplicate"] is True  # type: ignore[index]
    assert requeue_s < 5
    assert redis_client.xlen(DLQ) == 0
    assert events(redis_client, "ingestion.failed") == []


def test_a_document_lightrag_keeps_failing_is_dead_lettered_after_three_attempts(
    lightrag: tuple[LightRAGServer, RefusingLlmStandin],
    workers: WorkerProcesses,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    server, standin = lightrag
    name = name_of("job-e", 0)
    standin.state.refuse_chat_status = 400  # LightRAG does not retry a 400 from its LLM
    try:
        workers.start(lightrag_env(redis_server, server))
        enqueue(redis_client, "job-e", 0)
        wait_for(lambda: redis_client.xlen(DLQ) == 1, timeout_s=60)
        wait_for(lambda: settled(redis_client))
    finally:
        standin.state.refuse_chat_status = None

    [(_, letter)] = redis_client.xrange(DLQ)
    assert letter["dlq_attempts"] == "3"
    assert letter["dlq_reason"].startswith(
        f"LightRAG at {server.base_url} reported {name} failed: "
    )
    assert "The stand-in LLM refuses this text." in letter["dlq_reason"]
    failed = events(redis_client, "ingestion.failed")
    assert [data["attempt"] for data in failed] == [1, 2, 3]
    # Each retry deleted the failed document and inserted the chunk again: LightRAG holds one.
    [document] = named(server, "failed", {name})
    assert not document["metadata"].get("is_duplicate")  # type: ignore[union-attr]
    assert workers.logs().count(f"deleting {name}") == 2
