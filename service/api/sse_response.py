"""The one way a route answers with an event stream: /events/stream and /agui/ingest.

sse-starlette already sends ``Cache-Control: no-store`` and ``X-Accel-Buffering: no``. Each
stream gets its own shutdown event (see stream_shutdown), a send timeout so a client that
stopped reading is let go, and LF line ends, which every EventSource parser accepts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
from sse_starlette import EventSourceResponse

from service.api.stream_shutdown import SHUTDOWN_GRACE_S

# A client that takes no bytes for this long is gone (or hostile): its stream ends.
SSE_SEND_TIMEOUT_S = 30.0

Frames = AsyncIterator[bytes] | AsyncIterator[str] | AsyncIterator[bytes | str]


def event_stream_response(
    frames_until: Callable[[anyio.Event], Frames], ping_s: float | None = None
) -> EventSourceResponse:
    """An SSE response of the frames `frames_until(shutdown)` yields; they should end soon
    after `shutdown` is set."""
    shutdown = anyio.Event()
    return EventSourceResponse(
        frames_until(shutdown),
        ping=ping_s,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
        sep="\n",
        send_timeout=SSE_SEND_TIMEOUT_S,
    )
