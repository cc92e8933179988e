"""AG-UI runs on job state over real HTTP: interrupts answered by resume runs, cancellation,
Last-Event-ID continuation and scoped tokens, with a real redis-server and worker process."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import redis

from harness.redis_server import RedisServer
from harness.waiting import wait_until
from tests.service.handlers import FAIL_MARK, HEALED_KEY, HOLD_MARK
from tests.support.agui_input import run_input
from tests.support.agui_stream import agui_run, assert_steps_pair_up, brief, final_state
from tests.support.live_server import serve
from tests.support.processes import service_env, start_worker
from tests.support.service_settings import make_settings
from tests.support.tokens import ADMIN_TOKEN, JWT_SECRET, mint

DLQ = "shield:ingestion_queue:dlq"
PARAGRAPH = 3000


def two_chunk_document(second_mark: str) -> str:
    return "x" * PARAGRAPH + "\n\n" + second_mark + "y" * PARAGRAPH


def start(redis_server: RedisServer, handler: str) -> subprocess.Popen[str]:
    env = service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        task_handler=handler,
        retry_backoff_ms=50,
        retry_backoff_max_ms=100,
    )
    return start_worker(env)


def resume_input(run_id: str, answers: list[tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    """A resume run on thread-1, as a client sends it: the same messages, and its answers."""
    resume = [
        {"interruptId": interrupt_id, "status": "resolved", "payload": payload}
        if payload is not None
        else {"interruptId": interrupt_id, "status": "cancelled"}
        for interrupt_id, payload in answers
    ]
    return run_input(run_id, two_chunk_document(FAIL_MARK), resume=resume)


def interrupt_ids(finished: dict[str, Any]) -> list[str]:
    assert finished["type"] == "RUN_FINISHED"
    assert finished["outcome"]["type"] == "interrupt"
    return [interrupt["id"] for interrupt in finished["outcome"]["interrupts"]]


def job(base_url: str, job_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=base_url) as client:
        answer = client.get(f"/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_dead_letter_retried_by_a_resume_run_streams_the_job_to_done(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    workers.append(start(redis_server, "tests.service.handlers:fail_marked_until_healed"))
    with agui_run(api, run_input("run-i", two_chunk_document(FAIL_MARK))) as reader:
        first = reader.until_end()
    [dead_letter] = interrupt_ids(first[-1])
    assert [entry_id for entry_id, _ in redis_client.xrange(DLQ)] == [dead_letter]
    assert final_state(first) == {"total": 2, "done": 1, "failed": 1}
    assert job(api, "run-i")["state"] == "failed"

    redis_client.set(HEALED_KEY, "1")
    with agui_run(
        api, resume_input("run-i-resume", [(dead_letter, {"action": "retry"})])
    ) as reader:
        second = reader.until_end()
    assert second[0] == {"type": "RUN_STARTED", "threadId": "thread-1", "runId": "run-i-resume"}
    assert brief(second[1]) == 'STATE_SNAPSHOT {"done": 1, "failed": 0, "total": 2}'
    assert second[-1] == {
        "type": "RUN_FINISHED",
        "threadId": "thread-1",
        "runId": "run-i-resume",
        "result": {"total": 2, "done": 2, "failed": 0},
    }
    assert_steps_pair_up(second)
    assert {"STEP_FINISHED run-i-1", "STEP_FINISHED run-i-2"} <= {brief(e) for e in second}
    assert redis_client.xlen(DLQ) == 0
    answer = job(api, "run-i")
    assert (answer["state"], answer["done"], answer["failed"]) == ("done", 2, 0)

    # The same resume run again re-attaches: nothing is requeued twice.
    with agui_run(
        api, resume_input("run-i-resume", [(dead_letter, {"action": "retry"})])
    ) as reader:
        again = reader.until_end()
    assert again[-1]["result"] == {"total": 2, "done": 2, "failed": 0}
    assert "outcome" not in again[-1]


def test_a_dead_letter_skipped_or_cancelled_is_dropped_and_the_run_finishes(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    workers.append(start(redis_server, "tests.service.handlers:fail_marked"))
    document = FAIL_MARK + "a" * PARAGRAPH + "\n\n" + FAIL_MARK + "b" * PARAGRAPH
    with agui_run(api, run_input("run-s", document)) as reader:
        first = reader.until_end()
    skipped, cancelled = interrupt_ids(first[-1])
    body = resume_input("run-s-resume", [(skipped, {"action": "skip"}), (cancelled, None)])
    with agui_run(api, body) as reader:
        second = reader.until_end()
    assert second[-1] == {
        "type": "RUN_FINISHED",
        "threadId": "thread-1",
        "runId": "run-s-resume",
        "result": {"total": 2, "done": 0, "failed": 2},
    }
    assert redis_client.xlen(DLQ) == 0
    assert job(api, "run-s")["state"] == "failed"


def test_a_resume_of_another_jobs_dead_letter_or_with_no_thread_is_409(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    foreign = redis_client.xadd(DLQ, {"job_id": "someone-else", "chunk_id": "c"})
    with httpx.Client(base_url=api) as client:
        lonely = resume_input("run-n", [(foreign, {"action": "retry"})])
        refused = client.post("/agui/ingest", json={**lonely, "threadId": "no-such-thread"})
        assert refused.status_code == 409
        assert "has no run whose interrupts to resume" in refused.json()["detail"]
    workers.append(start(redis_server, "tests.service.handlers:fail_marked"))
    with agui_run(api, run_input("run-o", "fine")) as reader:
        reader.until_end()
    with httpx.Client(base_url=api) as client:
        refused = client.post(
            "/agui/ingest", json=resume_input("run-o-resume", [(foreign, {"action": "retry"})])
        )
    assert refused.status_code == 409
    assert "is not a dead letter of job 'run-o'" in refused.json()["detail"]
    assert redis_client.xlen(DLQ) == 1


def test_a_job_cancelled_while_its_run_streams_finishes_it_cancelled(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    workers.append(start(redis_server, "tests.service.job_handlers:hold_until_cancelled"))
    document = "x" * PARAGRAPH + "\n\n" + HOLD_MARK + "y" * PARAGRAPH
    with agui_run(api, run_input("run-c", document)) as reader:
        seen = [brief(event) for event in reader.take(2)]
        while "STEP_STARTED run-c-2" not in seen:
            seen.append(brief(reader.next()))
        with httpx.Client(base_url=api) as client:
            assert client.delete("/jobs/run-c").status_code == 202
        rest = reader.until_end()
    events = reader.events
    assert rest[-1] == {
        "type": "RUN_FINISHED",
        "threadId": "thread-1",
        "runId": "run-c",
        "result": {"total": 2, "done": 1, "failed": 0},
        "outcome": {"type": "cancelled"},
    }
    assert "CUSTOM job.cancelled" in [brief(event) for event in rest]
    assert_steps_pair_up(events)
    assert job(api, "run-c")["state"] == "cancelled"
    # Re-attached later, the run ends the same way, from the job state.
    with agui_run(api, run_input("run-c", document)) as reader:
        again = reader.until_end()
    assert again[-1]["outcome"] == {"type": "cancelled"}


def test_every_frame_has_an_id_and_last_event_id_continues_after_it(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    document = "a" * PARAGRAPH + "\n\n" + HOLD_MARK + "b" * PARAGRAPH + "\n\n" + "c" * PARAGRAPH
    body = run_input("run-l", document)
    with agui_run(api, body) as reader:
        reader.take(2)
        env = service_env(
            redis_server.url,
            block_ms=200,
            claim_idle_ms=400,
            task_handler="tests.service.handlers:hold_marked",
            batch_size=1,
            worker_concurrency=1,
        )
        workers.append(start_worker(env))
        while "STEP_STARTED run-l-2" not in [brief(event) for event in reader.events]:
            reader.next()
        before = list(reader.events)
        ids = list(reader.ids)
    assert all(frame_id for frame_id in ids)
    assert len(set(ids)) == len(ids)
    # The client dropped after the step of chunk 2 opened; the job goes on meanwhile.
    redis_client.set("test:release", "1")
    wait_until(lambda: job(api, "run-l")["state"] == "done")
    with agui_run(api, body, last_event_id=ids[-1]) as reader:
        after = reader.until_end()
    # No replay: no RUN_STARTED, no snapshot, nothing the client had; just what followed.
    assert [brief(event) for event in after] == [
        "STEP_FINISHED run-l-2",
        "STATE_DELTA /done=2",
        "STEP_STARTED run-l-3",
        "STEP_FINISHED run-l-3",
        "STATE_DELTA /done=3",
        "RUN_FINISHED",
    ]
    assert not set(reader.ids) & set(ids)
    whole = before + after
    assert_steps_pair_up(whole)
    assert final_state(whole) == {"total": 3, "done": 3, "failed": 0}

    # Continuing from a frame of the opening sends the rest of that opening, then the rest.
    with agui_run(api, body, last_event_id=ids[0]) as reader:
        from_opening = reader.until_end()
    assert brief(from_opening[0]) == 'STATE_SNAPSHOT {"done": 0, "failed": 0, "total": 3}'
    assert_steps_pair_up(from_opening)
    assert final_state(from_opening) == {"total": 3, "done": 3, "failed": 0}

    with httpx.Client(base_url=api) as client:
        refused = client.post("/agui/ingest", json=body, headers={"Last-Event-ID": "nonsense"})
    assert refused.status_code == 422
    assert "Last-Event-ID 'nonsense' is not a frame id" in refused.json()["detail"]


def test_a_token_limited_to_a_job_runs_and_resumes_only_that_jobs_runs(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    settings = make_settings(redis_server, api_token=ADMIN_TOKEN, jwt_secret=JWT_SECRET)
    workers.append(start(redis_server, "tests.service.handlers:fail_marked"))
    mine = mint("jobs:write events:read", jobs=["run-m*"])
    with serve(settings) as base_url:
        theirs_body = run_input("run-theirs", two_chunk_document(FAIL_MARK))
        with agui_run(base_url, theirs_body, token=ADMIN_TOKEN) as reader:
            [theirs] = interrupt_ids(reader.until_end()[-1])
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {mine}"}) as client:
            other_job = client.post("/agui/ingest", json=run_input("run-other", "text"))
            assert other_job.status_code == 403
            # The thread's job is run-theirs: resuming it is refused, and nothing moves.
            resume = resume_input("run-mine-resume", [(theirs, {"action": "retry"})])
            assert client.post("/agui/ingest", json=resume).status_code == 403
        assert [entry_id for entry_id, _ in redis_client.xrange(DLQ)] == [theirs]
        body = run_input("run-mine", two_chunk_document(FAIL_MARK), threadId="thread-mine")
        with agui_run(base_url, body, token=mine) as reader:
            [my_dead_letter] = interrupt_ids(reader.until_end()[-1])
        answer = [(my_dead_letter, {"action": "skip"})]
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {mine}"}) as client:
            # Its own thread's job, but a resume runId outside its jobs: refused.
            outside = {**resume_input("other-resume", answer), "threadId": "thread-mine"}
            assert client.post("/agui/ingest", json=outside).status_code == 403
        inside = {**resume_input("run-mine-resume", answer), "threadId": "thread-mine"}
        with agui_run(base_url, inside, token=mine) as reader:
            assert reader.until_end()[-1]["result"] == {"total": 2, "done": 1, "failed": 1}
        assert [entry_id for entry_id, _ in redis_client.xrange(DLQ)] == [theirs]


def test_every_chunk_gets_both_steps_even_when_a_worker_finishes_it_before_the_stream(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    # A worker already waiting takes the chunks the moment they are admitted, so some finish
    # before the stream's opening is read: the race seen once in three runs before.
    workers.append(start(redis_server, "tests.service.handlers:record"))
    document = "\n\n".join(letter * PARAGRAPH for letter in "abcd")
    for attempt in range(3):
        run_id = f"run-fast-{attempt}"
        with agui_run(api, run_input(run_id, document)) as reader:
            events = reader.until_end()
        shown = [brief(event) for event in events]
        for number in range(1, 5):
            assert shown.count(f"STEP_STARTED {run_id}-{number}") == 1, shown
            assert shown.count(f"STEP_FINISHED {run_id}-{number}") == 1, shown
        assert_steps_pair_up(events)
        assert final_state(events) == {"total": 4, "done": 4, "failed": 0}
        assert events[-1]["result"] == {"total": 4, "done": 4, "failed": 0}


def test_a_run_goes_on_through_a_worker_sigkilled_mid_chunk(
    api: str, redis_server: RedisServer, redis_client: redis.Redis, workers: list
) -> None:
    document = "a" * PARAGRAPH + "\n\n" + HOLD_MARK + "b" * PARAGRAPH
    with agui_run(api, run_input("run-k", document)) as reader:
        doomed = start(redis_server, "tests.service.handlers:hold_marked")
        workers.append(doomed)
        while "STEP_STARTED run-k-2" not in [brief(event) for event in reader.events]:
            reader.next()
        doomed.kill()
        doomed.wait()
        # The next worker reclaims the held chunk once it has been idle claim_idle_ms.
        redis_client.set("test:release", "1")
        workers.append(start(redis_server, "tests.service.handlers:hold_marked"))
        events = reader.until_end()
    whole = reader.events
    assert events[-1]["result"] == {"total": 2, "done": 2, "failed": 0}
    assert "outcome" not in events[-1]
    assert_steps_pair_up(whole)
    assert [brief(event) for event in whole].count("STEP_STARTED run-k-2") == 1
    answer = job(api, "run-k")
    assert (answer["state"], answer["done"]) == ("done", 2)
