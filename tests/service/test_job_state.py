"""Pure parts of jobs and idempotency: the state name, ids, keys and request fingerprints."""

from __future__ import annotations

import json

import pytest

from service.core.idempotency import (
    IdempotencyKeyReused,
    IdempotentWrite,
    InvalidIdempotencyKey,
    check_key,
    replayed_result,
)
from service.jobs.errors import InvalidJobId
from service.jobs.job_state import JobState, check_job_id, job_state, job_view

ZERO = dict.fromkeys(("queued", "running", "retrying", "done", "failed", "cancelled"), 0)


@pytest.mark.parametrize(
    ("stored", "counts", "expected"),
    [
        ("", {"queued": 3}, JobState.QUEUED),
        ("", {"retrying": 1}, JobState.QUEUED),
        ("", {"queued": 2, "running": 1}, JobState.RUNNING),
        ("", {"queued": 2, "done": 1}, JobState.RUNNING),
        ("", {"done": 3}, JobState.RUNNING),
        ("cancelling", {"running": 1}, JobState.CANCELLING),
        ("done", {"done": 3}, JobState.DONE),
        ("failed", {"done": 2, "failed": 1}, JobState.FAILED),
        ("cancelled", {"cancelled": 3}, JobState.CANCELLED),
    ],
)
def test_job_state_names(stored: str, counts: dict[str, int], expected: JobState) -> None:
    assert job_state(stored, {**ZERO, **counts}) is expected


def test_a_job_view_orders_chunks_as_submitted_and_reads_its_counters() -> None:
    chunks = {
        "b": json.dumps({"state": "done", "attempts": 1, "entry_id": "2-0", "seq": 2}),
        "a": json.dumps(
            {"state": "retrying", "attempts": 2, "entry_id": "1-0", "seq": 1, "error": "boom"}
        ),
    }
    fields = {"total": "2", "known_total": "1", "retrying": "1", "done": "1", "state": ""}
    view = job_view("j", {**fields, "created_at": "t0", "meta": '{"k": 1}'}, chunks)
    assert view.state is JobState.RUNNING and view.total == 2 and view.total_known
    assert view.counts == {**ZERO, "retrying": 1, "done": 1}
    assert view.metadata == {"k": 1} and view.finished_at is None
    assert view.chunks is not None
    assert [(c.chunk_id, c.state, c.attempts, c.error) for c in view.chunks] == [
        ("a", "retrying", 2, "boom"),
        ("b", "done", 1, None),
    ]


@pytest.mark.parametrize("job_id", ["", "x" * 257, "a\nb", "a\u202eb"])
def test_bad_job_ids_are_refused(job_id: str) -> None:
    with pytest.raises(InvalidJobId):
        check_job_id(job_id)


@pytest.mark.parametrize("key", ["", "k" * 201, "caf\u00e9", "a\tb", "\x7f"])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        check_key(key)


def test_a_request_fingerprint_ignores_key_order_but_not_values_or_routes() -> None:
    first = IdempotentWrite.of("POST /tasks", "k 1", {"a": 1, "b": [1, 2]})
    same = IdempotentWrite.of("POST /tasks", "k 1", {"b": [1, 2], "a": 1})
    assert first == same
    assert first.request_hash != IdempotentWrite.of("POST /tasks", "k 1", {"a": 2}).request_hash
    other_route = IdempotentWrite.of("POST /events", "k 1", {"a": 1, "b": [1, 2]})
    assert other_route.record_key != first.record_key


def test_script_replies_are_read_as_replays_or_refusals() -> None:
    assert replayed_result([1, "0-0", "j", "1-0"]) is None
    assert replayed_result([3, json.dumps({"hash": "h", "result": [1, "c", "j", "5-0"]})]) == [
        1,
        "c",
        "j",
        "5-0",
    ]
    with pytest.raises(IdempotencyKeyReused):
        replayed_result([4])
