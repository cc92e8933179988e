"""The metrics-collector's fold, as a table: what only a reader of every entry can know."""

from __future__ import annotations

import json

from service.core.instruments import JOB_BUCKETS_S, LATENCY_BUCKETS_S, cumulative_buckets
from service.events.collected import bucket_bound, fold, histogram_summary, summarize
from service.events.frontend_groups import newest_by_app


def completed(entry_id: str, job_id: str, message_ids: list[str]) -> tuple[str, dict[str, str]]:
    data = json.dumps({"message_ids": message_ids, "chunk_ids": message_ids})
    return entry_id, {"type": "ingestion.completed", "job_id": job_id, "data": data}


def test_task_latency_runs_from_the_task_entry_to_the_completion_event() -> None:
    batch = fold(
        tasks=[("1000-0", {"job_id": "j"}), ("1500-0", {"job_id": "j"})],
        events=[completed("4000-0", "j", ["1000-0", "1500-0"])],
    )
    assert batch.task_latencies_s == [3.0, 2.5]
    assert batch.queued_by_job == {"j": 2}
    assert batch.settled_by_job == {"j": 2}
    assert batch.first_queued_ms == {"j": 1000}
    assert batch.events_by_type == {"ingestion.completed": 1}


def test_dead_letters_settle_their_task_and_foreign_entries_are_skipped() -> None:
    batch = fold(
        tasks=[("1-0", {"job_id": "\udcff"}), ("2-0", {})],
        events=[
            ("3-0", {"type": "ingestion.dead_lettered", "job_id": "k", "data": "{oops"}),
            ("4-0", {"type": "\udcfe"}),
            completed("5-0", "k", ["not-an-id", "1-0"]),
            ("6-0", {"type": "ingestion.completed", "job_id": "k", "data": '{"message_ids": 7}'}),
        ],
    )
    assert batch.queued_by_job == {}
    assert batch.settled_by_job == {"k": 1 + 2}
    assert batch.task_latencies_s == [0.004]
    assert batch.events_by_type == {"ingestion.dead_lettered": 1, "ingestion.completed": 2}


def test_a_cancelled_job_settles_the_chunks_its_cancellation_took() -> None:
    cancelled = json.dumps({"total": 3, "done": 1, "failed": 0, "cancelled": 2})
    batch = fold(
        tasks=[("1-0", {"job_id": "c"}), ("2-0", {"job_id": "c"}), ("3-0", {"job_id": "c"})],
        events=[
            completed("4-0", "c", ["1-0"]),
            ("5-0", {"type": "job.cancelled", "job_id": "c", "data": cancelled}),
            ("6-0", {"type": "job.cancelled", "job_id": "d", "data": '{"cancelled": "x"}'}),
        ],
    )
    assert batch.queued_by_job == {"c": 3}
    assert batch.settled_by_job == {"c": 3}


def test_buckets_are_prometheus_upper_bounds_and_add_up() -> None:
    assert bucket_bound(0.01, LATENCY_BUCKETS_S) == "0.01"
    assert bucket_bound(0.011, LATENCY_BUCKETS_S) == "0.05"
    assert bucket_bound(10_000, LATENCY_BUCKETS_S) == "+Inf"
    counts = {"0.01": "2", "1.0": "1", "+Inf": "1", "sum": "100.5", "count": "4"}
    buckets, total, count = cumulative_buckets(counts, LATENCY_BUCKETS_S)
    assert buckets[0] == ("0.01", 2.0) and buckets[-1] == ("+Inf", 4.0)
    assert (total, count) == (100.5, 4.0)
    assert histogram_summary(counts, LATENCY_BUCKETS_S) == {
        "count": 4,
        "mean_s": 25.125,
        "p50_at_most_s": 0.01,
        "p99_at_most_s": None,
    }


def test_the_summary_lists_the_busiest_event_types_first() -> None:
    summary = summarize({}, {"5.0": "1", "count": "1", "sum": "3"}, {"a.b": "2", "c.d": "9"})
    assert summary["events_by_type"] == {"c.d": 9, "a.b": 2}
    assert summary["job_duration"] == {
        "count": 1,
        "mean_s": 3.0,
        "p50_at_most_s": 5.0,
        "p99_at_most_s": 5.0,
    }
    assert len(JOB_BUCKETS_S) > 5


def test_each_application_moves_to_the_newest_id_any_of_its_clients_was_sent() -> None:
    cursors = [("a", "5-0"), ("a", "12-0"), ("b", "3-1"), (None, "99-0"), ("b", "3-0")]
    assert newest_by_app(cursors) == {"a": "12-0", "b": "3-1"}
