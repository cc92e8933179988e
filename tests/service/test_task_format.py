"""Exact-text tests of the task entry's wire format, including entries nobody should write."""

from __future__ import annotations

import re

import pytest

from service.tasks.task_format import (
    ENTRY_FIELDS,
    PAYLOAD_FIELDS,
    MalformedTask,
    decode_task,
    task_fields,
)

GOOD = {"job_id": "j", "chunk_id": "c", "content": "x"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_task_fields_decode_to_handler_payload() -> None:
    fields = task_fields(job_id="j", chunk_id="c", content="text", metadata={"k": 1}, timestamp="t")
    assert fields == {
        "job_id": "j",
        "chunk_id": "c",
        "content": "text",
        "source_uri": "",
        "source_type": "",
        "metadata": '{"k":1}',
        "retry_count": "0",
        "timestamp": "t",
    }
    payload = decode_task("3-0", fields).as_handler_payload()
    assert payload == {**fields, "metadata": {"k": 1}, "retry_count": 0, "message_id": "3-0"}


def test_entry_fields_are_the_original_designs_and_two_optional_ones() -> None:
    assert ENTRY_FIELDS == (*PAYLOAD_FIELDS, "traceparent", "busy_count")
    assert PAYLOAD_FIELDS == (
        "job_id",
        "chunk_id",
        "content",
        "source_uri",
        "source_type",
        "metadata",
        "retry_count",
        "timestamp",
    )


def test_a_retried_task_keeps_everything_but_its_count() -> None:
    task = decode_task("5-0", task_fields(job_id="j", chunk_id="c", content="x", timestamp="t"))
    again = task.retried(2).to_fields()
    assert again == {**task.to_fields(), "retry_count": "2"}


def test_a_traceparent_is_written_only_when_set_and_stays_out_of_the_payload() -> None:
    untraced = task_fields(job_id="j", chunk_id="c", content="x", timestamp="t")
    traced = task_fields(
        job_id="j", chunk_id="c", content="x", timestamp="t", traceparent=TRACEPARENT
    )
    assert "traceparent" not in untraced
    assert traced == {**untraced, "traceparent": TRACEPARENT}
    task = decode_task("7-0", traced)
    assert task.traceparent == TRACEPARENT
    assert "traceparent" not in task.as_handler_payload()
    assert task.retried(1).to_fields()["traceparent"] == TRACEPARENT


def test_an_entry_written_before_traceparent_existed_decodes_untraced() -> None:
    old_entry = {**GOOD, "metadata": "{}", "retry_count": "1", "timestamp": "t"}
    task = decode_task("8-0", old_entry)
    assert task.traceparent == ""
    assert task.to_fields() == {**old_entry, "source_uri": "", "source_type": ""}


def test_busy_deferrals_are_counted_apart_written_only_once_busy_and_out_of_the_payload() -> None:
    fresh = decode_task("6-0", task_fields(job_id="j", chunk_id="c", content="x", timestamp="t"))
    assert fresh.busy_count == 0 and "busy_count" not in fresh.to_fields()
    twice = fresh.deferred_busy().deferred_busy()
    assert twice.to_fields() == {**fresh.to_fields(), "busy_count": "2"}
    assert twice.retry_count == 0
    again = decode_task("6-1", twice.to_fields())
    assert again.busy_count == 2 and "busy_count" not in again.as_handler_payload()
    # A failed attempt keeps the busy count, and a busy answer keeps the retry count.
    assert again.retried(1).to_fields() == {**twice.to_fields(), "retry_count": "1"}


def test_an_entry_written_before_busy_count_existed_was_never_busy() -> None:
    old_entry = {**GOOD, "metadata": "{}", "retry_count": "2", "timestamp": "t"}
    task = decode_task("8-1", old_entry)
    assert task.busy_count == 0 and task.retry_count == 2
    assert decode_task("8-2", {**old_entry, "busy_count": ""}).busy_count == 0


@pytest.mark.parametrize(
    ("stored", "decoded"),
    [
        (TRACEPARENT, TRACEPARENT),
        # A later version is read by its version-00 part.
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", TRACEPARENT),
        ("not a traceparent", ""),
        (TRACEPARENT.upper(), ""),
        ("", ""),
    ],
)
def test_a_malformed_stored_traceparent_is_dropped_and_the_task_still_runs(
    stored: str, decoded: str
) -> None:
    assert decode_task("9-0", {**GOOD, "traceparent": stored}).traceparent == decoded


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"chunk_id": "c", "content": "x"}, "missing field(s): job_id"),
        ({**GOOD, "metadata": "{"}, "not valid JSON"),
        ({**GOOD, "metadata": "[]"}, "not a JSON object"),
        ({**GOOD, "metadata": "[" * 100_000}, "not valid JSON"),
        ({**GOOD, "retry_count": "x"}, "not an integer"),
        ({**GOOD, "retry_count": "-1"}, "retry_count is negative"),
        ({**GOOD, "busy_count": "many"}, "busy_count is not an integer"),
        ({**GOOD, "busy_count": "-2"}, "busy_count is negative"),
        # What a client decoding with surrogateescape makes of b"\xff\xfe".
        ({**GOOD, "content": "\udcff\udcfe"}, "1 field(s) are not UTF-8"),
        ({**GOOD, "\udcff": "x"}, "1 field(s) are not UTF-8"),
    ],
)
def test_malformed_tasks_name_their_reason(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(MalformedTask, match=re.escape(reason)):
        decode_task("1-0", fields)
