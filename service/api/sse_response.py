"""The one way a route answers with an event stream: /events/stream and /agui/ingest.

sse-starlette already sends ``Cache-Control: no-store`` and ``X-Accel-Buffering: no``. Each
stream gets its own shutdown event (see stream_shutdown), a send timeout so a client that
stopped reading is let go, and LF line ends, which every EventSource parser accepts.

The send timeout is kept by a watchdog, not by a timeout scope around each send. A stream
sends up to a hundred times a second per client, and a cancel scope per send (sse-starlette's
own way) cost more than the send itself: 1,000 clients at 1,000 events/s spent most of the
process on it. Instead each send marks when it began, and a timer that fires a few times
per timeout cancels the whole response when a send has been in flight longer than the
timeout. The stream then ends as sse-starlette's own timeout ends it: SendTimeoutError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import anyio
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from service.api.stream_shutdown import SHUTDOWN_GRACE_S

# A client that takes no bytes for this long is gone (or hostile): its stream ends.
SSE_SEND_TIMEOUT_S = 30.0
# The watchdog looks this many times per timeout, so a stuck send ends within 1.25 timeouts.
WATCHDOG_CHECKS_PER_TIMEOUT = 4

Frames = AsyncIterator[bytes] | AsyncIterator[str] | AsyncIterator[bytes | str]


class WatchedEventSourceResponse(EventSourceResponse):
    """sse-starlette's response with its per-send timeout kept by one timer per stream."""

    def __init__(self, *args: object, watched_send_timeout_s: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._watched_timeout_s = watched_send_timeout_s
        self._sends_in_flight = 0
        self._in_flight_since_s = 0.0
        self._scope: anyio.CancelScope | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        with anyio.CancelScope() as self._scope:
            self._timer = loop.call_later(self._check_every_s, self._check, loop)
            try:
                await super().__call__(scope, receive, send)
            finally:
                self._timer.cancel()
        if self._scope.cancel_called:
            raise SendTimeoutError()

    @property
    def _check_every_s(self) -> float:
        return self._watched_timeout_s / WATCHDOG_CHECKS_PER_TIMEOUT

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self._sends_in_flight == 0:
            self._in_flight_since_s = asyncio.get_running_loop().time()
        self._sends_in_flight += 1
        try:
            await send(message)
        finally:
            self._sends_in_flight -= 1

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        stuck_s = loop.time() - self._in_flight_since_s
        if self._sends_in_flight and stuck_s >= self._watched_timeout_s and self._scope:
            self._scope.cancel()
            return
        self._timer = loop.call_later(self._check_every_s, self._check, loop)


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
