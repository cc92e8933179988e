"""Task handlers that the worker tests load through SHIELD_TASK_HANDLER."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio

HANDLED_KEY = "test:handled"
BEGAN_KEY = "test:began"


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
    """Note the start, sleep for the number of seconds in the content, then succeed."""
    with _client() as client:
        client.rpush(BEGAN_KEY, task["chunk_id"])
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


def fail_marked_without_redis(task: Mapping[str, Any]) -> None:
    """Fail every attempt at a chunk whose content holds FAIL_MARK; succeed quietly
    otherwise, touching no Redis (for workers whose Redis user reaches only its own keys)."""
    if FAIL_MARK in task["content"]:
        raise RuntimeError(f"cannot process {task['chunk_id']}")


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


RUNNING_KEY = "test:running"
MOST_AT_ONCE_KEY = "test:most-at-once"
CALLS_KEY = "test:calls"
ATTEMPT_TIMES_KEY = "test:attempt-times"

# A Lua INCR that also keeps the highest value seen, so the count of handlers running at once
# is read from Redis, not from timing.
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


async def sleep_counting_concurrency(task: Mapping[str, Any]) -> None:
    """Sleep for the seconds in the content, counting how many run at once."""
    client = redis.asyncio.Redis.from_url(os.environ["SHIELD_REDIS_URL"])
    try:
        await client.eval(_ENTER, 2, RUNNING_KEY, MOST_AT_ONCE_KEY)
        await asyncio.sleep(float(task["content"]))
        await client.decr(RUNNING_KEY)
        await client.rpush(HANDLED_KEY, task["chunk_id"])
    finally:
        await client.aclose()


def sync_sleep_counting_concurrency(task: Mapping[str, Any]) -> None:
    """The same in a sync handler, which the worker runs in its thread pool."""
    with _client() as client:
        client.eval(_ENTER, 2, RUNNING_KEY, MOST_AT_ONCE_KEY)
        time.sleep(float(task["content"]))
        client.decr(RUNNING_KEY)
        client.rpush(HANDLED_KEY, task["chunk_id"])


def record_call_time(task: Mapping[str, Any]) -> None:
    """Note when each call was made, for the rate limit."""
    with _client() as client:
        client.rpush(CALLS_KEY, repr(time.time()))
        client.rpush(HANDLED_KEY, task["chunk_id"])


def fail_twice_noting_times(task: Mapping[str, Any]) -> None:
    """Fail the first two attempts at a chunk, noting when each attempt came."""
    with _client() as client:
        client.rpush(ATTEMPT_TIMES_KEY, repr(time.time()))
        if task["retry_count"] < 2:
            raise RuntimeError(f"attempt {task['retry_count'] + 1} of {task['chunk_id']} fails")
        client.rpush(HANDLED_KEY, task["chunk_id"])


def report_progress(task: Mapping[str, Any], context: Any) -> None:
    """A handler that takes the context: progress twice, then success."""
    context.progress(0.5, "half way")
    context.progress(1.0)
    record(task)


BUSY_KEY = "test:busy-once"


async def busy_once_then_record(task: Mapping[str, Any], context: Any) -> None:
    """Ask for a retry in 1 s the first time a chunk is seen, as a busy service would."""
    client = redis.asyncio.Redis.from_url(os.environ["SHIELD_REDIS_URL"])
    try:
        first = await client.set(f"{BUSY_KEY}:{task['chunk_id']}", "1", nx=True)
        await client.rpush(ATTEMPT_TIMES_KEY, repr(time.time()))
    finally:
        await client.aclose()
    if first:
        context.retry_after(1)
    record(task)


TRACES_KEY = "test:traces"


def record_trace(task: Mapping[str, Any], context: Any) -> None:
    """Note the traceparent the context gives and that of the span current in this thread."""
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    current = f"{span_context.trace_id:032x}-{span_context.span_id:016x}"
    with _client() as client:
        client.rpush(TRACES_KEY, json.dumps({"context": context.traceparent, "current": current}))


HEALED_KEY = "test:healed"


def fail_marked_until_healed(task: Mapping[str, Any]) -> None:
    """Fail a FAIL_MARK chunk until HEALED_KEY exists (a fix deployed), then record it like any
    other: a dead letter requeued after the fix succeeds."""
    if FAIL_MARK in task["content"]:
        with _client() as client:
            if not client.exists(HEALED_KEY):
                raise RuntimeError(f"cannot process {task['chunk_id']} yet")
    record(task)


ATTEMPTS_KEY_PREFIX = "test:attempts:"
FAILING_ATTEMPTS = 3


def fail_marked_first_attempts(task: Mapping[str, Any]) -> None:
    """Fail the first FAILING_ATTEMPTS attempts at a FAIL_MARK chunk (as many as the queue
    makes before dead-lettering it), then record it: a requeued dead letter succeeds."""
    if FAIL_MARK in task["content"]:
        with _client() as client:
            attempt = int(client.incr(ATTEMPTS_KEY_PREFIX + task["chunk_id"]))
        if attempt <= FAILING_ATTEMPTS:
            raise RuntimeError(f"cannot process {task['chunk_id']} (attempt {attempt})")
    record(task)
