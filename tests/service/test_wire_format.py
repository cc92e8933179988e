"""Exact-text tests of the pure wire formats, ids and filters."""

from __future__ import annotations

import json

import pytest

from service.events.filters import EventFilter
from service.events.stream_ids import (
    InvalidStreamId,
    StartPoint,
    StreamBounds,
    is_after,
    normalize_resume_point,
    plan_start,
)
from service.events.wire import (
    EncodedEvent,
    Event,
    NoticeKind,
    UnreadableEntry,
    encode_for_clients,
    encode_sse,
    encode_sse_cursor,
    encode_sse_gap,
    encode_sse_notice,
    encode_sse_opening,
    encode_sse_unnamed,
    encode_ws,
    encode_ws_batch,
    encode_ws_gap,
    encode_ws_notice,
    is_event_type,
    sse_data,
)

EVENT = Event(
    type="ingestion.progress",
    event_id="8c6f4f8e-1d7e-4a55-9a57-1f0a4c2e9d11",
    timestamp="2026-11-25T10:00:00+00:00",
    job_id="job-1",
    data={"progress": 0.5},
    metadata={"source": "test"},
)


def test_sse_frame_matches_original_design() -> None:
    assert encode_sse("1700000000000-0", EVENT) == (
        b"event: ingestion.progress\n"
        b"id: 1700000000000-0\n"
        b'data: {"event_id":"8c6f4f8e-1d7e-4a55-9a57-1f0a4c2e9d11","job_id":"job-1",'
        b'"timestamp":"2026-11-25T10:00:00+00:00","progress":0.5,"metadata":{"source":"test"}}\n\n'
    )


def test_envelope_wins_over_data_keys_in_sse() -> None:
    spoof = Event(
        type="a.b",
        event_id="real-id",
        timestamp="t",
        job_id="real",
        data={"event_id": "FAKE", "job_id": "spoofed", "timestamp": "x", "metadata": 1, "n": 2},
        metadata={"m": 1},
    )
    assert json.loads(sse_data(spoof)) == {
        "event_id": "real-id",
        "job_id": "real",
        "timestamp": "t",
        "n": 2,
        "metadata": {"m": 1},
    }
    encoded = encode_for_clients("1-0", spoof.to_fields())
    assert encoded.job_id == "real"
    assert json.loads(encoded.ws)["data"]["job_id"] == "spoofed"


def test_sse_and_ws_carry_the_same_event() -> None:
    encoded = encode_for_clients("7-1", EVENT.to_fields())
    ws = json.loads(encoded.ws)
    lines = encoded.sse.decode().splitlines()
    assert lines[0] == f"event: {ws['type']}" and lines[1] == f"id: {ws['id']}"
    sse = json.loads(lines[2].removeprefix("data: "))
    assert sse == {
        "event_id": ws["event_id"],
        "job_id": ws["job_id"],
        "timestamp": ws["timestamp"],
        **ws["data"],
        "metadata": ws["metadata"],
    }


def test_ws_message_has_every_field() -> None:
    assert json.loads(encode_ws("1-1", EVENT)) == {
        "id": "1-1",
        "type": "ingestion.progress",
        "event_id": EVENT.event_id,
        "job_id": "job-1",
        "timestamp": "2026-11-25T10:00:00+00:00",
        "data": {"progress": 0.5},
        "metadata": {"source": "test"},
    }


def test_event_fields_round_trip() -> None:
    assert Event.from_fields(EVENT.to_fields()) == EVENT


def test_new_event_has_uuid4_and_aware_utc_timestamp() -> None:
    event = Event(type="test.event")
    assert len(event.event_id) == 36 and event.event_id[14] == "4"
    assert event.timestamp.endswith("+00:00")


def test_sse_data_with_newline_in_values_stays_on_one_line() -> None:
    frame = encode_sse("1-0", Event(type="a.b", data={"text": "two\nlines"}))
    assert frame.count(b"\n") == 4


@pytest.mark.parametrize(
    ("fields", "expected_type", "expected_data"),
    [
        ({"type": "test.event", "data": '{"msg":"hi"}'}, "test.event", {"msg": "hi"}),
        ({"data": "not json"}, "message", {"raw": "not json"}),
        ({"type": "a.b", "data": "[1,2]"}, "a.b", {"value": [1, 2]}),
        ({"type": "evil\nevent: x.y"}, "evilevent:x.y", {}),
        ({"type": " \r\n"}, "message", {}),
        # NaN is not JSON: it would reach browsers as a data line JSON.parse rejects.
        ({"type": "a.b", "data": '{"x":NaN}'}, "a.b", {"raw": '{"x":NaN}'}),
    ],
)
def test_foreign_entries_decode_without_failing(
    fields: dict[str, str], expected_type: str, expected_data: dict[str, object]
) -> None:
    encoded = encode_for_clients("5-0", fields)
    assert encoded.type == expected_type
    assert json.loads(encoded.ws)["data"] == expected_data


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "a.b", "data": b"\xff".decode("utf-8", "surrogateescape")},
        {"type": b"a.\xfe".decode("utf-8", "surrogateescape")},
        {"type": "a.b", "job_id": b"\xc3".decode("utf-8", "surrogateescape")},
        {"type": "a.b", "data": "[" * 100_000},
        {"type": "a.b", "metadata": "[" * 5_000 + "]" * 5_000},
        {"type": "a.b", "data": '{"x":"\\ud800"}'},
    ],
)
def test_unservable_entries_raise_unreadable_entry(fields: dict[str, str]) -> None:
    with pytest.raises(UnreadableEntry):
        encode_for_clients("5-0", fields)


def test_frames_are_utf8_not_ascii_escapes() -> None:
    frame = encode_sse("1-0", Event(type="a.b", event_id="e", timestamp="t", data={"k": "é"}))
    assert "é".encode() in frame


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("ingestion.progress", True),
        ("query.completed", True),
        ("a.b.c", True),
        ("nodot", False),
        ("Upper.case", False),
        ("trailing.", False),
        (".leading", False),
        ("with space.x", False),
    ],
)
def test_event_type_rule(value: str, valid: bool) -> None:
    assert is_event_type(value) is valid


def test_unnamed_frame_has_no_event_line_and_the_type_first_in_data() -> None:
    assert encode_sse_unnamed("1700000000000-0", EVENT) == (
        b"id: 1700000000000-0\n"
        b'data: {"type":"ingestion.progress","event_id":"8c6f4f8e-1d7e-4a55-9a57-1f0a4c2e9d11",'
        b'"job_id":"job-1","timestamp":"2026-11-25T10:00:00+00:00","progress":0.5,'
        b'"metadata":{"source":"test"}}\n\n'
    )


def test_unnamed_frame_type_is_envelope_and_wins_over_a_data_key() -> None:
    event = Event(type="a.b", event_id="e", timestamp="t", data={"type": "x.y", "n": 1})
    assert encode_sse_unnamed("2-0", event) == (
        b'id: 2-0\ndata: {"type":"a.b","event_id":"e","job_id":"","timestamp":"t","n":1,'
        b'"metadata":{}}\n\n'
    )
    # Named frames keep a data key called type: their type is on the event line.
    assert b'"type":"x.y"' in encode_sse("2-0", event)


def test_every_entry_is_encoded_once_for_both_sse_shapes() -> None:
    encoded = encode_for_clients("7-1", EVENT.to_fields())
    assert encoded.sse == encode_sse("7-1", EVENT)
    assert encoded.sse_unnamed == encode_sse_unnamed("7-1", EVENT)


def test_stream_opens_with_retry_and_the_cursor_as_id_and_no_data() -> None:
    assert encode_sse_opening("17-3") == b"retry: 1000\nid: 17-3\n\n"
    assert encode_sse_opening("0-0", retry_ms=250) == b"retry: 250\nid: 0-0\n\n"
    assert encode_sse_cursor("18-0") == b"id: 18-0\n\n"


@pytest.mark.parametrize(
    ("kind", "message", "expected"),
    [
        (
            NoticeKind.SLOW_CLIENT,
            "client too slow",
            b'event: notice\nid: 9-9\ndata: {"notice":"slow_client","message":"client too slow",'
            b'"resume_from":"9-9"}\n\n',
        ),
        (
            NoticeKind.SHUTDOWN,
            "server shutting down",
            b'event: notice\nid: 9-9\ndata: {"notice":"shutdown",'
            b'"message":"server shutting down","resume_from":"9-9"}\n\n',
        ),
        (
            NoticeKind.REDIS_UNAVAILABLE,
            "redis unavailable: gone",
            b'event: notice\nid: 9-9\ndata: {"notice":"redis_unavailable",'
            b'"message":"redis unavailable: gone","resume_from":"9-9"}\n\n',
        ),
    ],
)
def test_notice_frames_are_named_notice_and_carry_the_resume_id(
    kind: NoticeKind, message: str, expected: bytes
) -> None:
    assert encode_sse_notice(kind, message, "9-9") == expected
    assert json.loads(encode_ws_notice(kind, message, "9-9")) == {
        "type": "notice",
        **json.loads(expected.split(b"data: ")[1]),
    }


def test_gap_notices_name_the_first_id_still_held() -> None:
    assert encode_sse_gap("3-0", "9-0") == (
        b'event: notice\nid: 3-0\ndata: {"notice":"gap","message":"history after the resume id'
        b' was trimmed; the first id held is 9-0","resume_from":"3-0","after":"3-0",'
        b'"first_id":"9-0"}\n\n'
    )
    assert json.loads(encode_ws_gap("3-0", None)) == {
        "type": "notice",
        "notice": "gap",
        "message": "history after the resume id was trimmed; nothing is held",
        "resume_from": "3-0",
        "after": "3-0",
        "first_id": None,
    }


def test_ws_batch_is_a_json_array_of_the_messages_as_encoded() -> None:
    messages = [encode_ws("1-0", EVENT), encode_ws("2-0", EVENT)]
    assert encode_ws_batch(messages) == "[" + messages[0] + "," + messages[1] + "]"
    assert json.loads(encode_ws_batch(messages)) == [json.loads(m) for m in messages]
    assert encode_ws_batch([]) == "[]"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "0"), ("", "0"), ("0", "0-0"), ("$", "$"), ("17-3", "17-3"), ("17", "17-0")],
)
def test_resume_points(value: str | None, expected: str) -> None:
    assert normalize_resume_point(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "1-",
        "-1",
        "1-2-3",
        "99999999999999999999999",
        "18446744073709551616-0",
        # Redis refuses it as an exclusive start: nothing can come after it.
        "18446744073709551615-18446744073709551615",
    ],
)
def test_invalid_resume_points(value: str) -> None:
    with pytest.raises(InvalidStreamId):
        normalize_resume_point(value)


TRIMMED = StreamBounds(first_id="10-0", last_generated_id="20-0", entries_removed=9)


@pytest.mark.parametrize(
    ("resume_point", "bounds", "expected"),
    [
        ("0", TRIMMED, StartPoint("0-0", first_held_id="10-0")),
        ("0-0", TRIMMED, StartPoint("0-0", first_held_id="10-0")),
        ("$", TRIMMED, StartPoint("20-0", first_held_id="10-0")),
        ("5-0", TRIMMED, StartPoint("5-0", gap=True, first_held_id="10-0")),
        ("10-0", TRIMMED, StartPoint("10-0", first_held_id="10-0")),
        ("20-0", TRIMMED, StartPoint("20-0", first_held_id="10-0")),
        ("5-0", StreamBounds("1-0", "20-0", 0), StartPoint("5-0", first_held_id="1-0")),
        ("5-0", StreamBounds(None, "20-0", 20), StartPoint("5-0", gap=True)),
        ("20-0", StreamBounds(None, "20-0", 20), StartPoint("20-0")),
        ("$", StreamBounds(), StartPoint("0-0")),
    ],
)
def test_start_points(resume_point: str, bounds: StreamBounds, expected: StartPoint) -> None:
    assert plan_start(resume_point, bounds) == expected


@pytest.mark.parametrize(
    ("resume_point", "bounds"),
    [("20-1", TRIMMED), ("9999999999999-0", TRIMMED), ("1-0", StreamBounds())],
)
def test_ids_after_the_last_generated_id_are_refused(
    resume_point: str, bounds: StreamBounds
) -> None:
    with pytest.raises(InvalidStreamId, match="after the stream's last id"):
        plan_start(resume_point, bounds)


def test_ids_order_numerically_not_as_text() -> None:
    assert is_after("10-0", "9-5")
    assert is_after("9-10", "9-9")
    assert not is_after("9-9", "9-9")


def _encoded(event_type: str, job_id: str = "") -> EncodedEvent:
    return EncodedEvent("1-0", event_type, job_id, b"", b"", "")


@pytest.mark.parametrize(
    ("types", "job_id", "event_type", "event_job", "accepted"),
    [
        (None, None, "a.b", "", True),
        ("a.b", None, "a.b", "", True),
        ("a.b", None, "a.c", "", False),
        ("ingestion.*", None, "ingestion.progress", "", True),
        ("ingestion.*", None, "query.completed", "", False),
        ("query.completed, ingestion.*", None, "query.completed", "", True),
        (None, "j1", "a.b", "j1", True),
        (None, "j1", "a.b", "j2", False),
        ("a.*", "j1", "a.b", "j2", False),
    ],
)
def test_filters(
    types: str | None, job_id: str | None, event_type: str, event_job: str, accepted: bool
) -> None:
    assert EventFilter.parse(types, job_id).accepts(_encoded(event_type, event_job)) is accepted
