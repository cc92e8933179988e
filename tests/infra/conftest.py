"""Pulumi's Outputs need a current event loop in the main thread."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(autouse=True)
def current_event_loop() -> None:
    """Set a loop when an earlier test's asyncio.run left the thread without one."""
    policy = asyncio.get_event_loop_policy()
    try:
        policy.get_event_loop()
    except RuntimeError:
        policy.set_event_loop(policy.new_event_loop())
