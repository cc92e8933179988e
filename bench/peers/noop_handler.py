"""The task handlers our worker runs in the queue benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

SLOW_HANDLER_S = 0.2


async def noop(task: Mapping[str, Any]) -> None:
    """Nothing, on the worker's loop, as the peers' no-op processors are coroutines too."""


async def sleep_200ms(task: Mapping[str, Any]) -> None:
    """A handler that waits on something outside, as one calling an LLM would."""
    await asyncio.sleep(SLOW_HANDLER_S)
