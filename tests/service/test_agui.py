"""The pure AG-UI layer: input to plan, chunking, job events to AG-UI events, wire frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ag_ui.core import BaseEvent, RunStartedEvent, StepStartedEvent

from service.agui.frame_ids import FrameId, Framer, parse_frame_id
from service.agui.job_snapshot import ChunkRecord, JobSnapshot, chunk_records, seed_before, seed_of
from service.agui.run_plan import (
    CHUNK_CHARS,
    IngestRefused,
    chunk_text,
    parse_run_input,
    plan_ingest,
    plan_resume,
)
from service.agui.run_view import (
    JobEvent,
    RunProgress,
    RunSeed,
    dead_letter_interrupt,
    encode_events,
    encode_frames,
    interrupted,
    job_event_from_ws,
)
from service.jobs.job_admission import ChunkSpec

RUN = "r"
CHUNKS = ("r-1", "r-2", "r-3")
# Entry ids the run record holds for its chunks, as the route passes them.
ENTRIES = {"1-0": "r-1", "2-0": "r-2", "3-0": "r-3"}


def brief(event: BaseEvent) -> str:
    """One event as a short line, so a table reads like the stream."""
    body = json.loads(event.model_dump_json(by_alias=True))
    kind = body["type"]
    if kind in ("STEP_STARTED", "STEP_FINISHED"):
        return f"{kind} {body['stepName']}"
    if kind == "STATE_DELTA":
        ops = ",".join(f"{op['op']} {op['path']}={op['value']}" for op in body["delta"])
        return f"STATE_DELTA {ops}"
    if kind == "STATE_SNAPSHOT":
        return f"STATE_SNAPSHOT {json.dumps(body['snapshot'], sort_keys=True)}"
    if kind == "CUSTOM":
        return f"CUSTOM {body['name']} {json.dumps(body['value'], sort_keys=True)}"
    if kind == "RUN_ERROR":
        return f"RUN_ERROR {body.get('code')}: {body['message']}"
    return str(kind)


def batch(event_type: str, *chunks: str, message_ids: list[str] | None = None) -> JobEvent:
    ids = message_ids if message_ids is not None else [f"{chunk[-1]}-0" for chunk in chunks]
    return JobEvent(
        event_type, {"count": len(chunks), "message_ids": ids, "chunk_ids": list(chunks)}
    )


def dead(message_id: str) -> JobEvent:
    return JobEvent(
        "ingestion.dead_lettered", {"message_id": message_id, "error": "boom", "attempts": 3}
    )


def failed(message_id: str, chunk: str, retrying: bool) -> JobEvent:
    data = {"message_id": message_id, "chunk_id": chunk, "error": "boom", "attempt": 1}
    return JobEvent("ingestion.failed", {**data, "retrying": retrying})


def fold(events: list[JobEvent]) -> tuple[RunProgress, list[str]]:
    progress = RunProgress("t", RUN, RunSeed(CHUNKS, message_chunks=dict(ENTRIES)))
    shown = [brief(out) for event in events for out in progress.apply(event)]
    return progress, shown


@pytest.mark.parametrize(
    ("events", "expected", "state"),
    [
        pytest.param(
            [batch("ingestion.started", *CHUNKS)],
            ["STEP_STARTED r-1", "STEP_STARTED r-2", "STEP_STARTED r-3"],
            {"total": 3, "done": 0, "failed": 0},
            id="a batch start opens one step per chunk",
        ),
        pytest.param(
            [batch("ingestion.started", "r-1", "r-2"), batch("ingestion.completed", "r-1", "r-2")],
            [
                "STEP_STARTED r-1",
                "STEP_STARTED r-2",
                "STEP_FINISHED r-1",
                "STEP_FINISHED r-2",
                "STATE_DELTA replace /done=2",
            ],
            {"total": 3, "done": 2, "failed": 0},
            id="a batch completion closes them with one delta",
        ),
        pytest.param(
            [batch("ingestion.completed", "r-2")],
            ["STEP_STARTED r-2", "STEP_FINISHED r-2", "STATE_DELTA replace /done=1"],
            {"total": 3, "done": 1, "failed": 0},
            id="a completion without a seen start opens the step first",
        ),
        pytest.param(
            [
                batch("ingestion.started", "r-1"),
                batch("ingestion.completed", "r-1"),
                batch("ingestion.completed", "r-1"),
            ],
            ["STEP_STARTED r-1", "STEP_FINISHED r-1", "STATE_DELTA replace /done=1"],
            {"total": 3, "done": 1, "failed": 0},
            id="a duplicate completion changes nothing",
        ),
        pytest.param(
            [
                batch("ingestion.started", "r-1"),
                failed("1-0", "r-1", retrying=True),
                batch("ingestion.started", "r-1", message_ids=["9-0"]),
            ],
            [
                "STEP_STARTED r-1",
                'CUSTOM ingestion.failed {"attempt": 1, "chunk_id": "r-1", "error": "boom", '
                '"message_id": "1-0", "retrying": true}',
            ],
            {"total": 3, "done": 0, "failed": 0},
            id="a retry passes as CUSTOM and does not restart the open step",
        ),
        pytest.param(
            [
                batch("ingestion.started", "r-2", message_ids=["7-0"]),
                dead("7-0"),
            ],
            [
                "STEP_STARTED r-2",
                'CUSTOM ingestion.dead_lettered {"attempts": 3, "chunk_id": "r-2", '
                '"error": "boom", "message_id": "7-0"}',
                "STEP_FINISHED r-2",
                "STATE_DELTA replace /failed=1",
            ],
            {"total": 3, "done": 0, "failed": 1},
            id="a dead letter of a retry entry is found by the id its start named",
        ),
        pytest.param(
            [dead("3-0")],
            [
                'CUSTOM ingestion.dead_lettered {"attempts": 3, "chunk_id": "r-3", '
                '"error": "boom", "message_id": "3-0"}',
                "STEP_STARTED r-3",
                "STEP_FINISHED r-3",
                "STATE_DELTA replace /failed=1",
            ],
            {"total": 3, "done": 0, "failed": 1},
            id="a dead letter of an enqueued entry is found by the run record",
        ),
        pytest.param(
            [dead("99-0")],
            [
                'CUSTOM ingestion.dead_lettered {"attempts": 3, "error": "boom", '
                '"message_id": "99-0"}'
            ],
            {"total": 3, "done": 0, "failed": 0},
            id="a dead letter of an unknown entry only passes as CUSTOM",
        ),
        pytest.param(
            [dead("1-0"), batch("ingestion.completed", "r-1")],
            [
                'CUSTOM ingestion.dead_lettered {"attempts": 3, "chunk_id": "r-1", '
                '"error": "boom", "message_id": "1-0"}',
                "STEP_STARTED r-1",
                "STEP_FINISHED r-1",
                "STATE_DELTA replace /failed=1",
                "STEP_STARTED r-1",
                "STEP_FINISHED r-1",
                "STATE_DELTA replace /done=1,replace /failed=0",
            ],
            {"total": 3, "done": 1, "failed": 0},
            id="a requeued dead letter that completes counts as done",
        ),
        pytest.param(
            [batch("ingestion.started", "other-1", "r-1"), batch("ingestion.completed", "x-9")],
            ["STEP_STARTED r-1"],
            {"total": 3, "done": 0, "failed": 0},
            id="chunks outside the run are ignored",
        ),
        pytest.param(
            [
                JobEvent("ingestion.started", {"chunk_ids": "r-1"}),
                JobEvent("ingestion.completed", {"chunk_ids": [1, None, {"a": 1}]}),
                JobEvent("ingestion.failed", {"message_id": ["x"], "chunk_id": ["r-1"]}),
                JobEvent("ingestion.dead_lettered", {"message_id": {"a": 1}}),
            ],
            [
                'CUSTOM ingestion.failed {"chunk_id": ["r-1"], "message_id": ["x"]}',
                'CUSTOM ingestion.dead_lettered {"message_id": {"a": 1}}',
            ],
            {"total": 3, "done": 0, "failed": 0},
            id="malformed data from a foreign writer changes nothing",
        ),
        pytest.param(
            [JobEvent("doc.parsed", {"pages": 3, "name": "caf\udce9"})],
            ['CUSTOM doc.parsed {"name": "caf\\ufffd", "pages": 3}'],
            {"total": 3, "done": 0, "failed": 0},
            id="other events pass as CUSTOM, bytes that are not UTF-8 replaced",
        ),
    ],
)
def test_job_events_map_to_agui_events(
    events: list[JobEvent], expected: list[str], state: dict[str, int]
) -> None:
    progress, shown = fold(events)
    assert shown == expected
    assert progress.state == state


def closing_bodies(progress: RunProgress, interrupts: list[Any] | None = None) -> list[Any]:
    return [
        json.loads(event.model_dump_json(by_alias=True))
        for event in progress.closing(interrupts or [])
    ]


def test_run_finishes_when_every_chunk_is_done() -> None:
    progress, _ = fold([batch("ingestion.completed", *CHUNKS)])
    assert progress.settled
    assert closing_bodies(progress) == [
        {
            "type": "RUN_FINISHED",
            "threadId": "t",
            "runId": RUN,
            "result": {"total": 3, "done": 3, "failed": 0},
        }
    ]


def test_dead_letters_end_the_run_with_an_interrupt_each_once_all_are_settled() -> None:
    progress, _ = fold([dead("2-0"), batch("ingestion.completed", "r-1")])
    assert not progress.settled
    progress.apply(dead("3-0"))
    assert progress.settled
    assert progress.failed_chunks == ["r-2", "r-3"]
    interrupts = [
        dead_letter_interrupt("9-0", "r-2", "RuntimeError: boom"),
        dead_letter_interrupt("9-1", "r-3", ""),
    ]
    [finished] = closing_bodies(progress, interrupts)
    assert finished["outcome"]["type"] == "interrupt"
    assert finished["outcome"]["interrupts"] == [
        {
            "id": "9-0",
            "reason": "dead_lettered",
            "message": "RuntimeError: boom",
            "responseSchema": {
                "type": "object",
                "properties": {"action": {"type": "string", "enum": ["retry", "skip"]}},
                "required": ["action"],
            },
            "metadata": {"chunk_id": "r-2"},
        },
        {
            "id": "9-1",
            "reason": "dead_lettered",
            "message": "chunk r-3 was dead-lettered",
            "responseSchema": finished["outcome"]["interrupts"][0]["responseSchema"],
            "metadata": {"chunk_id": "r-3"},
        },
    ]


def test_a_cancelled_job_closes_its_open_steps_and_finishes_cancelled() -> None:
    progress, shown = fold(
        [
            batch("ingestion.started", "r-1", "r-2"),
            batch("ingestion.completed", "r-1"),
            JobEvent("job.cancelled", {"total": 3, "done": 1, "failed": 0, "cancelled": 2}),
        ]
    )
    assert shown[-1] == 'CUSTOM job.cancelled {"cancelled": 2, "done": 1, "failed": 0, "total": 3}'
    assert progress.ended and not progress.settled
    assert [
        (body["type"], body.get("stepName"), body.get("outcome"))
        for body in closing_bodies(progress)
    ] == [
        ("STEP_FINISHED", "r-2", None),
        ("RUN_FINISHED", None, {"type": "cancelled"}),
    ]


def test_job_completed_shows_nothing_the_run_finished_does_not() -> None:
    _, shown = fold([JobEvent("job.completed", {"total": 3, "done": 3})])
    assert shown == []


def test_opening_shows_the_job_state_and_both_steps_of_every_settled_chunk() -> None:
    seed = RunSeed(CHUNKS, done={"r-1"}, failed={"r-3"}, open=["r-2"])
    progress = RunProgress("t", RUN, seed)
    assert [brief(event) for event in progress.opening()] == [
        "RUN_STARTED",
        'STATE_SNAPSHOT {"done": 1, "failed": 1, "total": 3}',
        "STEP_STARTED r-1",
        "STEP_FINISHED r-1",
        "STEP_STARTED r-2",
        "STEP_STARTED r-3",
        "STEP_FINISHED r-3",
    ]
    assert [brief(event) for event in progress.opening(run_started=False)][0].startswith(
        "STATE_SNAPSHOT"
    )


def test_frames_carry_their_id_line_before_the_sdk_data_line() -> None:
    frames = [("5-0/s0", RunStartedEvent(thread_id="t", run_id="r"))]
    assert encode_frames(frames) == (
        b'id: 5-0/s0\ndata: {"type":"RUN_STARTED","threadId":"t","runId":"r"}\n\n'
    )


@pytest.mark.parametrize(
    ("events", "frames"),
    [
        (
            [RunStartedEvent(thread_id="t", run_id="r")],
            b'data: {"type":"RUN_STARTED","threadId":"t","runId":"r"}\n\n',
        ),
        (
            [StepStartedEvent(step_name="r-1"), StepStartedEvent(step_name="r-2")],
            b'data: {"type":"STEP_STARTED","stepName":"r-1"}\n\n'
            b'data: {"type":"STEP_STARTED","stepName":"r-2"}\n\n',
        ),
        (
            [interrupted("client too slow")],
            b'data: {"type":"RUN_ERROR","message":"event stream interrupted (client too slow);'
            b' POST the same runId again to re-attach","code":"stream_interrupted"}\n\n',
        ),
    ],
)
def test_frames_are_the_sdk_encoders_sse(events: list[BaseEvent], frames: bytes) -> None:
    assert encode_events(events) == frames


@pytest.mark.parametrize(
    ("ws", "expected"),
    [
        ('{"id":"1-0","type":"a.b","data":{"x":1}}', JobEvent("a.b", {"x": 1})),
        ('{"type":"a.b","data":[1]}', JobEvent("a.b", {})),
        ('{"type":5}', JobEvent("message", {})),
        ("[]", JobEvent("message", {})),
        ("not json", JobEvent("message", {})),
    ],
)
def test_fanout_events_are_read_leniently(ws: str, expected: JobEvent) -> None:
    assert job_event_from_ws(ws) == expected


def test_a_short_document_is_one_chunk_as_sent() -> None:
    text = "  a short document\n\nwith two paragraphs  \n"
    assert chunk_text(text) == [text]
    assert chunk_text("x" * CHUNK_CHARS) == ["x" * CHUNK_CHARS]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("aaa\n\nbbb\nccc ddd", 10, ["aaa\n\n", "bbb\n", "ccc ddd"]),
        ("aaa bbb\nccc", 9, ["aaa bbb\n", "ccc"]),
        ("aaa bbb ccc", 9, ["aaa bbb ", "ccc"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
        ("\n\nabcdef", 4, ["\n\n", "abcd", "ef"]),
    ],
)
def test_long_documents_are_cut_at_paragraph_line_or_word_ends(
    text: str, limit: int, expected: list[str]
) -> None:
    chunks = chunk_text(text, limit)
    assert chunks == expected
    assert "".join(chunks) == text
    assert all(0 < len(chunk) <= limit for chunk in chunks)


def run_input(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "threadId": "t",
        "runId": "run-1",
        "messages": [{"id": "m1", "role": "user", "content": "the document"}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_plan_takes_the_last_user_message_and_the_forwarded_source() -> None:
    body = run_input(
        messages=[
            {"id": "m1", "role": "user", "content": "old"},
            {"id": "m2", "role": "user", "content": [{"type": "text", "text": "new"}]},
            {"id": "m3", "role": "assistant", "content": "reply"},
        ],
        forwardedProps={
            "source_uri": "s3://docs/a.txt",
            "source_type": "text",
            "metadata": {"lang": "en"},
            "ui": "ignored",
        },
    )
    plan = plan_ingest(parse_run_input(body))
    assert plan.chunk_ids == ("run-1-1",)
    assert plan.chunk_specs() == [ChunkSpec("run-1-1", "new")]
    assert plan.source_uri == "s3://docs/a.txt" and plan.source_type == "text"
    assert plan.metadata == {"lang": "en"}


def test_same_document_same_digest_and_ids() -> None:
    first = plan_ingest(parse_run_input(run_input()))
    again = plan_ingest(parse_run_input(run_input(threadId="other-thread")))
    other = plan_ingest(parse_run_input(run_input(forwardedProps={"source_uri": "x"})))
    assert first.digest == again.digest and first.chunk_ids == again.chunk_ids
    assert first.digest != other.digest


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not a RunAgentInput: body: Invalid JSON"),
        (b"[]", "not a RunAgentInput: body: Input should be an object"),
        (run_input(runId=5), "not a RunAgentInput: runId: Input should be a valid string"),
        (
            run_input(messages=[{"id": "m", "role": "wizard", "content": "x"}]),
            "not a RunAgentInput: messages.0: Input tag 'wizard'",
        ),
        (run_input(messages=[]), "no user message"),
        (
            run_input(messages=[{"id": "m", "role": "assistant", "content": "x"}]),
            "no user message",
        ),
        (
            run_input(messages=[{"id": "m", "role": "user", "content": " \n "}]),
            "the last user message has no text",
        ),
        (
            run_input(
                messages=[
                    {
                        "id": "m",
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "value": "http://x"}}
                        ],
                    }
                ]
            ),
            "the last user message has no text",
        ),
        (run_input(runId=""), "runId must not be empty"),
        (run_input(runId="r" * 201), "runId is longer than 200 characters"),
        (run_input(runId="a\nb"), "runId holds control characters"),
        (run_input(threadId="t" * 257), "threadId is longer than 256 characters"),
        (run_input(forwardedProps=[1]), "forwardedProps must be a JSON object"),
        (run_input(forwardedProps={"source_uri": 1}), "forwardedProps.source_uri must be a"),
        (run_input(forwardedProps={"metadata": "x"}), "forwardedProps.metadata must be a JSON"),
        (
            run_input().replace(b'"the document"', b'"lone \\ud800 surrogate"'),
            "not a RunAgentInput: body: Invalid JSON",
        ),
        (
            run_input().replace(b'"the document"', b'"bad \xff byte"'),
            "not a RunAgentInput: body: Invalid JSON",
        ),
        (
            run_input().replace(b'"forwardedProps": {}', b'"forwardedProps": ' + b"[" * 5000),
            "not a RunAgentInput: body: Invalid JSON: recursion limit exceeded",
        ),
    ],
)
def test_bad_input_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(IngestRefused) as refused:
        plan_ingest(parse_run_input(body))
    assert str(refused.value).startswith(reason), str(refused.value)


@pytest.mark.parametrize(
    ("text", "frame"),
    [
        ("5-1/0", FrameId("5-1", 0)),
        ("5-1/s12", FrameId("5-1", 12, opening=True)),
        ("7/3", FrameId("7-0", 3)),
    ],
)
def test_frame_ids_read_back(text: str, frame: FrameId) -> None:
    assert parse_frame_id(text) == frame


@pytest.mark.parametrize("text", ["", "5-1", "5-1/", "5-1/x", "x-1/0", "5-1/s", "5-1/-1", "9" * 70])
def test_a_last_event_id_not_ours_is_refused_naming_the_header(text: str) -> None:
    with pytest.raises(IngestRefused, match="Last-Event-ID"):
        parse_frame_id(text)


def test_the_framer_numbers_per_cursor_and_drops_what_the_client_has() -> None:
    started = [StepStartedEvent(step_name=name) for name in ("a", "b", "c")]
    framer = Framer(FrameId("9-0", 0))
    assert [frame_id for frame_id, _ in framer.frames("8-0", started[:1], opening=True)] == [
        "8-0/s0"
    ]
    assert [frame_id for frame_id, _ in framer.frames("9-0", started)] == ["9-0/1", "9-0/2"]
    assert [frame_id for frame_id, _ in framer.more(started[:1], "0-0")] == ["9-0/3"]
    assert [frame_id for frame_id, _ in Framer().more(started[:1], "4-0")] == ["4-0/s0"]


CHUNK_HASH = {
    "r-2": '{"state": "failed", "attempts": 3, "entry_id": "12-0", "seq": 2, '
    '"error": "boom", "dead_letter_id": "20-0"}',
    "r-1": '{"state": "done", "attempts": 1, "entry_id": "11-0", "seq": 1}',
    "r-3": '{"state": "running", "attempts": 1, "entry_id": "13-0", "seq": 3}',
    "bad": "{oops",
}


def snapshot(state: str = "") -> JobSnapshot:
    return JobSnapshot("r", state, chunk_records(CHUNK_HASH), cursor="30-0")


def test_chunk_records_come_in_submission_order_and_skip_unreadable_ones() -> None:
    assert chunk_records(CHUNK_HASH) == (
        ChunkRecord("r-1", "done", "11-0", attempts=1),
        ChunkRecord("r-2", "failed", "12-0", dead_letter_id="20-0", error="boom", attempts=3),
        ChunkRecord("r-3", "running", "13-0", attempts=1),
    )


def test_the_seed_is_the_job_state() -> None:
    seed = seed_of(snapshot())
    assert seed.chunk_ids == CHUNKS
    assert (seed.done, seed.failed, seed.open) == ({"r-1"}, {"r-2"}, ["r-3"])
    assert seed.message_chunks == {"11-0": "r-1", "12-0": "r-2", "13-0": "r-3"}
    assert seed_of(snapshot("cancelled")).cancelled


def test_the_view_before_a_window_undoes_only_what_the_window_did() -> None:
    window = [
        batch("ingestion.completed", "r-1"),
        failed("12-0", "r-2", retrying=False),
        dead("12-0"),
        JobEvent("job.cancelled", {}),
    ]
    seed = seed_before(snapshot("cancelled"), window)
    # r-1 and r-2 were running before their window events; r-3 was running and untouched.
    assert (seed.done, seed.failed) == (set(), set())
    assert sorted(seed.open) == ["r-1", "r-2", "r-3"]
    assert not seed.cancelled
    # A chunk whose first window event is its first start had not started; one started
    # again after an attempt before the window was waiting for its retry, its step open.
    assert seed_before(snapshot(), [batch("ingestion.started", "r-3")]).open == []
    retry = batch("ingestion.started", "r-3", message_ids=["14-0"])
    assert seed_before(snapshot(), [retry, retry]).open == []
    two_attempts = {
        **CHUNK_HASH,
        "r-3": CHUNK_HASH["r-3"].replace('"attempts": 1', '"attempts": 2'),
    }
    retried = JobSnapshot("r", "", chunk_records(two_attempts), cursor="30-0")
    assert seed_before(retried, [retry]).open == ["r-3"]


def test_a_resume_reads_each_answer() -> None:
    body = run_input(
        resume=[
            {"interruptId": "20-0", "status": "resolved", "payload": {"action": "retry"}},
            {"interruptId": "21-0", "status": "resolved", "payload": {"action": "skip"}},
            {"interruptId": "22-0", "status": "cancelled"},
        ]
    )
    plan = plan_resume(parse_run_input(body))
    assert [(answer.interrupt_id, answer.action.value) for answer in plan.answers] == [
        ("20-0", "retry"),
        ("21-0", "skip"),
        ("22-0", "skip"),
    ]
    assert plan.digest == plan_resume(parse_run_input(body)).digest


@pytest.mark.parametrize(
    ("resume", "reason"),
    [
        ([{"interruptId": "x", "status": "cancelled"}], "resume.0.interruptId is not an interrupt"),
        (
            [{"interruptId": "1-0", "status": "resolved", "payload": {"action": "again"}}],
            'resume.0.payload must be {"action": "retry"} or {"action": "skip"}',
        ),
        (
            [{"interruptId": "1-0", "status": "resolved"}],
            'resume.0.payload must be {"action": "retry"}',
        ),
        (
            [
                {"interruptId": "1-0", "status": "cancelled"},
                {"interruptId": "1-0", "status": "cancelled"},
            ],
            "resume.1.interruptId '1-0' is answered twice",
        ),
    ],
)
def test_a_resume_that_cannot_be_read_is_refused_with_its_reason(
    resume: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(IngestRefused) as refused:
        plan_resume(parse_run_input(run_input(resume=resume)))
    assert str(refused.value).startswith(reason), str(refused.value)
