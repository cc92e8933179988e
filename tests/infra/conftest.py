"""Pulumi's mocks run the program on asyncio's current loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def current_event_loop() -> Iterator[None]:
    """A loop of their own: asyncio.run() in an earlier test leaves the main thread without one,
    and then asyncio.get_event_loop() raises instead of making one."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()
