"""Task handlers for the job tests, loaded by worker processes through SHIELD_TASK_HANDLER."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

import redis

from service.tasks.handlers.context import HandlerContext

HANDLED_KEY = "test:jobs:handled"
BEGAN_KEY = "test:jobs:began"
FAIL_MARK = "[fail]"
HOLD_MARK = "[hold]"


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["SHIELD_REDIS_URL"], decode_responses=True)


def _note(key: str, task: Mapping[str, Any]) -> None:
    with _client() as client:
        client.rpush(key, f"{task['job_id']}/{task['chunk_id']}")


def record_or_fail(task: Mapping[str, Any]) -> None:
    """Fail every attempt at a chunk whose content holds FAIL_MARK; note the others."""
    if FAIL_MARK in task["content"]:
        raise RuntimeError(f"{task['chunk_id']} fails on purpose")
    _note(HANDLED_KEY, task)


async def hold_until_cancelled(task: Mapping[str, Any], context: HandlerContext) -> None:
    """Async: a HOLD_MARK chunk waits a minute (its cancellation cuts that short); others
    are noted at once."""
    _note(BEGAN_KEY, task)
    if HOLD_MARK in task["content"]:
        await asyncio.sleep(60)
    _note(HANDLED_KEY, task)


def poll_until_cancelled(task: Mapping[str, Any], context: HandlerContext) -> None:
    """Sync, in a thread: a HOLD_MARK chunk polls context.cancelled and gives up when set."""
    _note(BEGAN_KEY, task)
    deadline = time.monotonic() + 60
    while HOLD_MARK in task["content"] and time.monotonic() < deadline:
        if context.cancelled:
            raise RuntimeError("cancelled, giving up")
        time.sleep(0.05)
    _note(HANDLED_KEY, task)
