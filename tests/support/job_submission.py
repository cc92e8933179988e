"""Submitting work through the API: one chunk per POST /tasks, or a job through an outage
(POST /jobs retried with one Idempotency-Key)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.live_server import http


def submit_until_accepted(
    client: httpx.Client, body: dict[str, Any], timeout_s: float = 60
) -> None:
    """POST /jobs until 201, retrying transport errors and 503 with the job id as the key;
    any other answer fails the test."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reply = client.post("/jobs", json=body, headers={"Idempotency-Key": body["job_id"]})
        except httpx.TransportError:
            reply = None
        if reply is not None and reply.status_code == 201:
            return
        assert reply is None or reply.status_code == 503, reply.text
        assert time.monotonic() < deadline, f"{body['job_id']} never accepted"
        time.sleep(0.2)


def post_tasks(base_url: str, job_id: str, count: int) -> None:
    """POST /tasks count times, chunks c0 to c{count-1} of job_id; every one must be 201."""
    with http(base_url) as client:
        replies = [
            client.post("/tasks", json={"job_id": job_id, "chunk_id": f"c{i}", "content": "x"})
            for i in range(count)
        ]
    assert [reply.status_code for reply in replies] == [201] * count
