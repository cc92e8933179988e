"""A demo task handler for the lab: it says what it did, in words a person reads.

The lab stack ships this directory with `handlerPath` and its one dependency (humanize, from
PyPI) with `handlerRequirements`, and names it `taskHandler: python:shield_demo_handler:handle`.
Each task prints one line to the worker's journal, so a test (or you) can see that the
deployed handler ran on the host: `journalctl -u 'shield-orchestrator-worker@*' | grep demo`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import humanize

VERSION = "1"


def handle(task: Mapping[str, Any]) -> None:
    """Print which chunk of which job was handled, and its size in human units."""
    size = humanize.naturalsize(len(str(task.get("content", "")).encode()))
    print(
        f"shield-demo-handler v{VERSION}: handled job={task.get('job_id')}"
        f" chunk={task.get('chunk_id')} ({size})",
        file=sys.stderr,
        flush=True,
    )
