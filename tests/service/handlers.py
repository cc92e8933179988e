"""Task handlers that the worker tests load through SHIELD_TASK_HANDLER."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import redis

HANDLED_KEY = "test:handled"


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["SHIELD_REDIS_URL"], decode_responses=True)


def record(task: Mapping[str, Any]) -> None:
    """Succeed, noting the chunk id (and whether metadata arrived as a dict)."""
    assert isinstance(task["metadata"], dict)
    with _client() as client:
        client.rpush(HANDLED_KEY, task["chunk_id"])


async def record_async(task: Mapping[str, Any]) -> None:
    await asyncio.sleep(0)
    record(task)


def fail_always(task: Mapping[str, Any]) -> None:
    raise RuntimeError(f"cannot process {task['chunk_id']}")


def slow_then_record(task: Mapping[str, Any]) -> None:
    """Sleep for the number of seconds in the content, then succeed."""
    time.sleep(float(task["content"]))
    record(task)


def kill_on_poison(task: Mapping[str, Any]) -> None:
    """Take the whole worker down for a poison task, as a segfaulting parser would."""
    if task["content"] == "poison":
        os.kill(os.getpid(), signal.SIGKILL)
    record(task)


FAIL_MARK = "[fail]"
HOLD_MARK = "[hold]"
RELEASE_KEY = "test:release"


def fail_marked(task: Mapping[str, Any]) -> None:
    """Fail every attempt at a chunk whose content holds FAIL_MARK; record the others."""
    if FAIL_MARK in task["content"]:
        raise RuntimeError(f"cannot process {task['chunk_id']}")
    record(task)


def hold_marked(task: Mapping[str, Any]) -> None:
    """Hold a chunk whose content holds HOLD_MARK until RELEASE_KEY exists, then record it."""
    if HOLD_MARK in task["content"]:
        with _client() as client:
            deadline = time.monotonic() + 30
            while not client.exists(RELEASE_KEY) and time.monotonic() < deadline:
                time.sleep(0.05)
    record(task)


REFUSED_WRITES_KEY = "test:refused-writes"


def refuse_writes_then_fail(task: Mapping[str, Any]) -> None:
    """Once: make Redis refuse writes, as a primary cut off from its replicas does, and fail,
    so the worker's retry move meets the refusal. Every later attempt succeeds."""
    with _client() as client:
        if client.set(REFUSED_WRITES_KEY, "1", nx=True):
            client.config_set("min-replicas-to-write", 1)
            raise RuntimeError(f"cannot process {task['chunk_id']}")
    record(task)


async def noop_async(task: Mapping[str, Any]) -> None:
    """Do nothing, on the loop: the worker's own overhead per task."""
