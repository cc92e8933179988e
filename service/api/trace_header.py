"""The ``traceparent`` header of a write that enqueues tasks: read once, kept with each task.

A malformed value is ignored, not refused, as W3C Trace Context asks of a receiver: the task
is queued untraced and the answer is the same as without the header. A valid one is kept in
its version-00 form. Every route that enqueues tasks takes ``traceparent: Traceparent`` and
passes it as ``Task(..., traceparent=traceparent)``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from service.core.trace_context import normalized_traceparent

_DESCRIPTION = (
    "W3C Trace Context traceparent of the caller's span; each task keeps it, and the worker "
    "continues the trace. A malformed value is ignored."
)


def incoming_traceparent(
    traceparent: Annotated[str | None, Header(description=_DESCRIPTION)] = None,
) -> str:
    """The request's traceparent in version-00 form, or "" when absent or malformed."""
    return normalized_traceparent(traceparent)


Traceparent = Annotated[str, Depends(incoming_traceparent)]
