"""The no-op task handler our worker runs in the queue benchmark."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def noop(task: Mapping[str, Any]) -> None:
    return None
