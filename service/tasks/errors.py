"""The task domain's errors, under one root."""

from __future__ import annotations


class TaskError(Exception):
    """The root of every error the task domain raises on purpose."""
