"""Task handlers the dashboard test's worker loads through SHIELD_TASK_HANDLER."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis

HANDLED_KEY = "browser:handled"
CURED_KEY = "browser:cured"


def fail_poison_until_cured(task: Mapping[str, Any]) -> None:
    """Fail a task whose content is "poison" until the test sets CURED_KEY; record the rest."""
    with redis.Redis.from_url(os.environ["SHIELD_REDIS_URL"], decode_responses=True) as client:
        if task["content"] == "poison" and not client.exists(CURED_KEY):
            raise RuntimeError(f"poison in {task['chunk_id']}")
        client.rpush(HANDLED_KEY, task["chunk_id"])
