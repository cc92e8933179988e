"""Exact-text tests of the pure wire formats, ids and filters."""

from __future__ import annotations

import json

import pytest

from service.events import (
    EncodedEvent,
    Event,
    encode_for_clients,
    encode_sse,
    encode_sse_error,
    encode_ws,
    is_event_type,
)
from service.filters import EventFilter
from service.streamids import InvalidStreamId, is_after, normalize_resume_point

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
        b'"timestamp":"2026-11-25T10:00:00+00:00","progress":0.5}\n\n'
    )


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
    ],
)
def test_foreign_entries_decode_without_failing(
    fields: dict[str, str], expected_type: str, expected_data: dict[str, object]
) -> None:
    encoded = encode_for_clients("5-0", fields)
    assert encoded.type == expected_type
    assert json.loads(encoded.ws)["data"] == expected_data


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


def test_error_frame_names_resume_point() -> None:
    assert encode_sse_error("too slow", "9-9") == (
        b'event: error\ndata: {"error":"too slow","resume_from":"9-9"}\n\n'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "0"), ("", "0"), ("0", "0-0"), ("$", "$"), ("17-3", "17-3"), ("17", "17-0")],
)
def test_resume_points(value: str | None, expected: str) -> None:
    assert normalize_resume_point(value) == expected


@pytest.mark.parametrize("value", ["abc", "1-", "-1", "1-2-3", "99999999999999999999999"])
def test_invalid_resume_points(value: str) -> None:
    with pytest.raises(InvalidStreamId):
        normalize_resume_point(value)


def test_ids_order_numerically_not_as_text() -> None:
    assert is_after("10-0", "9-5")
    assert is_after("9-10", "9-9")
    assert not is_after("9-9", "9-9")


def _encoded(event_type: str, job_id: str = "") -> EncodedEvent:
    return EncodedEvent("1-0", event_type, job_id, b"", "")


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
