"""The one way a route answers with an event stream: /events/stream and /agui/ingest.

sse-starlette already sends ``Cache-Control: no-store`` and ``X-Accel-Buffering: no``. Each
stream gets its own shutdown event (see stream_shutdown), a send timeout so a client that
stopped reading is let go, and LF line ends, which every EventSource parser accepts.

The send timeout is kept by one watchdog per stream (send_watchdog), not by a timeout scope
around each send; when it fires the stream ends as sse-starlette's own timeout ends it:
SendTimeoutError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from service.api.send_watchdog import SendWatchdog
from service.api.stream_shutdown import SHUTDOWN_GRACE_S

# A client that takes no bytes for this long is gone (or hostile): its stream ends.
SSE_SEND_TIMEOUT_S = 30.0

Frames = AsyncIterator[bytes] | AsyncIterator[str] | AsyncIterator[bytes | str]


class WatchedEventSourceResponse(EventSourceResponse):
    """sse-starlette's response with its per-send timeout kept by one timer per stream."""

    def __init__(self, *args: object, watched_send_timeout_s: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._scope = anyio.CancelScope()
        self._watchdog = SendWatchdog(watched_send_timeout_s, self._scope.cancel)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._scope:
            self._watchdog.start()
            try:
                await super().__call__(scope, receive, send)
            finally:
                self._watchdog.stop()
        if self._watchdog.fired:
            raise SendTimeoutError()

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        self._watchdog.began()
        try:
            await send(message)
        finally:
            self._watchdog.ended()


def event_stream_response(
    frames_until: Callable[[anyio.Event], Frames],
    ping_s: float | None = None,
    send_timeout_s: float = SSE_SEND_TIMEOUT_S,
) -> EventSourceResponse:
    """An SSE response of the frames `frames_until(shutdown)` yields; they should end soon
    after `shutdown` is set."""
    shutdown = anyio.Event()
    return WatchedEventSourceResponse(
        frames_until(shutdown),
        ping=ping_s,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
        sep="\n",
        watched_send_timeout_s=send_timeout_s,
    )
