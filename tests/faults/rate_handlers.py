"""The handler of the rate-limit fault test: it notes the time of every call it gets."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import redis

CALL_TIMES_KEY = "faults:rate:call-times"
RATE_COMPLETIONS_KEY = "faults:rate:completions"
_client: redis.Redis | None = None


def note_call_time_then_count(task: Mapping[str, Any]) -> None:
    """Note when the call came (this machine's clock), work 50 ms, count the completion."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["SHIELD_REDIS_URL"])
    _client.rpush(CALL_TIMES_KEY, repr(time.time()))
    time.sleep(0.05)
    _client.hincrby(RATE_COMPLETIONS_KEY, task["chunk_id"], 1)
