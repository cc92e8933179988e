"""Submitting a job through an outage: POST /jobs retried with one Idempotency-Key."""

from __future__ import annotations

import time
from typing import Any

import httpx


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
