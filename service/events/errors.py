"""The event domain's errors, under one root."""

from __future__ import annotations


class EventError(Exception):
    """The root of every error the event domain raises on purpose."""
