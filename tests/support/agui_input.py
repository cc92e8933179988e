"""AG-UI RunAgentInput bodies, as a front-end POSTs them to /agui/ingest."""

from __future__ import annotations

from typing import Any


def run_input(run_id: str, document: str, **extra: Any) -> dict[str, Any]:
    """A run of one user message holding the document, from file:///doc.txt; extra overrides."""
    return {
        "threadId": "thread-1",
        "runId": run_id,
        "messages": [{"id": "m1", "role": "user", "content": document}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {"source_uri": "file:///doc.txt", "source_type": "text"},
        **extra,
    }
