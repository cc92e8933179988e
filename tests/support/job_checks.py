"""Reading a job over HTTP and checking what must hold of its counters at every moment."""

from __future__ import annotations

import json
from typing import Any

import httpx
import redis

from service.core import names

COUNTS = ("queued", "running", "retrying", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


def read_job(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    """GET /jobs/{job_id}; None while the API cannot answer (Redis away, a failover)."""
    try:
        reply = client.get(f"/jobs/{job_id}")
    except httpx.TransportError:
        return None
    if reply.status_code == 503:
        return None
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def check_counters(job: dict[str, Any]) -> None:
    """Every chunk is in exactly one state, and nothing settled past the total."""
    counts = {name: job[name] for name in COUNTS}
    assert all(value >= 0 for value in counts.values()), counts
    assert sum(counts.values()) == job["total"], (job["job_id"], counts, job["total"])
    assert job["done"] + job["failed"] + job["cancelled"] <= job["total"], counts
    if job["chunks"] is not None:
        states = [chunk["state"] for chunk in job["chunks"]]
        assert {name: states.count(name) for name in COUNTS} == counts, job["job_id"]


def check_settled(job: dict[str, Any]) -> None:
    """A finished job: everything settled, exactly the total."""
    check_counters(job)
    assert job["state"] in FINISHED, job["state"]
    assert job["done"] + job["failed"] + job["cancelled"] == job["total"]


def job_event_counts(client: redis.Redis, stream: str = names.EVENTS_STREAM) -> dict[str, int]:
    """How many job.completed and job.cancelled each job got: "<type> <job id>" -> count."""
    counts: dict[str, int] = {}
    for _, fields in client.xrange(stream):
        if fields.get("type") in ("job.completed", "job.cancelled"):
            key = f"{fields['type']} {fields['job_id']}"
            counts[key] = counts.get(key, 0) + 1
            json.loads(fields["data"])
    return counts
