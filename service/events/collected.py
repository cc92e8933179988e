"""What the metrics-collector reads, folded into metrics; pure.

Only a reader of every task and every event can know these: how long each task took from
enqueue to done (its entry id holds the enqueue time, the ``ingestion.completed`` event's id
the completion time), how many events of each type arrive, and how long a job took from its
first task queued to its last task settled (completed or dead-lettered).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from service.core.instruments import (
    JOB_BUCKETS_S,
    LATENCY_BUCKETS_S,
    cumulative_buckets,
)
from service.core.json_safety import printable
from service.core.raw_text import is_utf8
from service.events.stream_ids import InvalidStreamId, parse_entry_id

# job.cancelled settles the chunks its cancellation took: no task event says so for them.
SETTLING_EVENTS = ("ingestion.completed", "ingestion.dead_lettered", "job.cancelled")


@dataclass
class CollectedBatch:
    """One read of both streams, folded."""

    task_latencies_s: list[float] = field(default_factory=list)
    events_by_type: Counter[str] = field(default_factory=Counter)
    queued_by_job: Counter[str] = field(default_factory=Counter)
    settled_by_job: Counter[str] = field(default_factory=Counter)
    first_queued_ms: dict[str, int] = field(default_factory=dict)


def entry_ms(entry_id: str) -> int:
    """The milliseconds part of a stream id: when Redis added the entry."""
    return parse_entry_id(entry_id)[0]


def _data(fields: Mapping[str, str]) -> dict[str, object]:
    try:
        value = json.loads(fields.get("data") or "{}")
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def fold(
    tasks: Iterable[tuple[str, Mapping[str, str]]],
    events: Iterable[tuple[str, Mapping[str, str]]],
) -> CollectedBatch:
    """Fold task entries and event entries read in one batch; foreign bytes are skipped."""
    batch = CollectedBatch()
    for entry_id, fields in tasks:
        job_id = fields.get("job_id", "")
        if not is_utf8(job_id) or not job_id:
            continue
        batch.queued_by_job[job_id] += 1
        batch.first_queued_ms.setdefault(job_id, entry_ms(entry_id))
    for entry_id, fields in events:
        event_type = fields.get("type", "")
        if not is_utf8(event_type) or not event_type:
            continue
        batch.events_by_type[event_type] += 1
        if event_type not in SETTLING_EVENTS:
            continue
        data = _data(fields)
        job_id = fields.get("job_id", "")
        if event_type == "ingestion.completed":
            listed = data.get("message_ids")
            message_ids = (
                [m for m in listed if isinstance(m, str)] if isinstance(listed, list) else []
            )
            done_ms = entry_ms(entry_id)
            for message_id in message_ids:
                try:
                    batch.task_latencies_s.append(max(0, done_ms - entry_ms(message_id)) / 1000)
                except InvalidStreamId:
                    continue
            settled = len(message_ids)
        elif event_type == "job.cancelled":
            cancelled = data.get("cancelled")
            settled = cancelled if isinstance(cancelled, int) and cancelled > 0 else 0
        else:
            settled = 1
        if job_id and is_utf8(job_id) and settled:
            batch.settled_by_job[job_id] += settled
    return batch


def bucket_bound(value: float, bounds: Sequence[float]) -> str:
    """The hash field of the first bucket that holds `value` ("+Inf" past the last)."""
    for bound in bounds:
        if value <= bound:
            return repr(float(bound))
    return "+Inf"


def histogram_summary(counts: Mapping[str, str], bounds: Sequence[float]) -> dict[str, object]:
    """How many, their mean, and the bucket bounds under which half and 99% of them fall."""
    buckets, total, count = cumulative_buckets(counts, bounds)

    def quantile(share: float) -> float | None:
        for bound, cumulative in buckets:
            if count and cumulative >= share * count:
                return None if bound == "+Inf" else float(bound)
        return None

    return {
        "count": int(count),
        "mean_s": round(total / count, 3) if count else None,
        "p50_at_most_s": quantile(0.5),
        "p99_at_most_s": quantile(0.99),
    }


def summarize(
    latency: Mapping[str, str], jobs: Mapping[str, str], types: Mapping[str, str], top: int = 20
) -> dict[str, object]:
    """The metrics-collector's figures for /events/stats and the dashboard."""
    counted = []
    for event_type, raw in types.items():
        try:
            counted.append((printable(event_type), int(float(raw))))
        except ValueError:
            continue
    counted.sort(key=lambda pair: (-pair[1], pair[0]))
    return {
        "task_latency": histogram_summary(latency, LATENCY_BUCKETS_S),
        "job_duration": histogram_summary(jobs, JOB_BUCKETS_S),
        "events_by_type": dict(counted[:top]),
    }
