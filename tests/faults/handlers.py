"""Handlers for the fault tests: count every completion, die on poison."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import redis

COMPLETIONS_KEY = "faults:completions"
_client: redis.Redis | None = None


def count_or_die(task: Mapping[str, Any]) -> None:
    """Count a completion per chunk id; a poison task kills the worker outright."""
    global _client
    if task["content"] == "poison":
        os.kill(os.getpid(), signal.SIGKILL)
    if _client is None:
        _client = redis.Redis.from_url(os.environ["SHIELD_REDIS_URL"])
    _client.hincrby(COMPLETIONS_KEY, task["chunk_id"], 1)


_tally: redis.Redis | None = None


def count_in_tally(task: Mapping[str, Any]) -> None:
    """Count a completion in a Redis of its own (TALLY_REDIS_URL), one that no failover touches."""
    global _tally
    if _tally is None:
        _tally = redis.Redis.from_url(os.environ["TALLY_REDIS_URL"])
    _tally.hincrby(COMPLETIONS_KEY, task["chunk_id"], 1)


FIRST_ATTEMPTS_KEY = "faults:first-attempts"


def fail_first_then_count(task: Mapping[str, Any]) -> None:
    """Fail each chunk's first attempt, so it waits for its retry; count the completions."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["SHIELD_REDIS_URL"])
    if _client.sadd(FIRST_ATTEMPTS_KEY, task["chunk_id"]):
        raise RuntimeError(f"first attempt at {task['chunk_id']} fails on purpose")
    _client.hincrby(COMPLETIONS_KEY, task["chunk_id"], 1)


JOB_FIRST_ATTEMPTS_KEY = "faults:job-first-attempts"


def job_chunk_or_die(task: Mapping[str, Any]) -> None:
    """For the job-counter faults: "poison" kills the worker, "flaky" fails its first attempt
    (so it waits for a retry), anything else is counted by job/chunk after a short pause."""
    global _client
    if task["content"] == "poison":
        os.kill(os.getpid(), signal.SIGKILL)
    if _client is None:
        _client = redis.Redis.from_url(os.environ["SHIELD_REDIS_URL"])
    name = f"{task['job_id']}/{task['chunk_id']}"
    if task["content"] == "flaky" and _client.sadd(JOB_FIRST_ATTEMPTS_KEY, name):
        raise RuntimeError(f"first attempt at {name} fails on purpose")
    time.sleep(0.02)
    _client.hincrby(COMPLETIONS_KEY, name, 1)
