"""Exact-text tests of the task entry's wire format, including entries nobody should write."""

from __future__ import annotations

import re

import pytest

from service.tasks.task_format import ENTRY_FIELDS, MalformedTask, decode_task, task_fields

GOOD = {"job_id": "j", "chunk_id": "c", "content": "x"}


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


def test_entry_fields_are_the_original_designs() -> None:
    assert ENTRY_FIELDS == (
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


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"chunk_id": "c", "content": "x"}, "missing field(s): job_id"),
        ({**GOOD, "metadata": "{"}, "not valid JSON"),
        ({**GOOD, "metadata": "[]"}, "not a JSON object"),
        ({**GOOD, "metadata": "[" * 100_000}, "not valid JSON"),
        ({**GOOD, "retry_count": "x"}, "not an integer"),
        ({**GOOD, "retry_count": "-1"}, "retry_count is negative"),
        # What a client decoding with surrogateescape makes of b"\xff\xfe".
        ({**GOOD, "content": "\udcff\udcfe"}, "1 field(s) are not UTF-8"),
        ({**GOOD, "\udcff": "x"}, "1 field(s) are not UTF-8"),
    ],
)
def test_malformed_tasks_name_their_reason(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(MalformedTask, match=re.escape(reason)):
        decode_task("1-0", fields)
