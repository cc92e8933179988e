"""A send timeout kept by one timer per stream, not by a timeout scope around each send.

A stream sends up to a thousand times a second per client, and a timeout scope per send
(asyncio.timeout, or sse-starlette's cancel scope) cost more than the send itself: it
doubled a WebSocket's CPU per event. Instead each send marks when it began, and a timer that
fires a few times per timeout calls ``on_stuck`` once a send has been in flight longer than
the timeout. SSE responses (sse_response) and WebSocket senders (event_routes) both use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# The watchdog looks this many times per timeout, so a stuck send ends within 1.25 timeouts.
CHECKS_PER_TIMEOUT = 4


class SendWatchdog:
    """Calls on_stuck once a send has been in flight for timeout_s; start it on the loop."""

    def __init__(self, timeout_s: float, on_stuck: Callable[[], object]) -> None:
        self.timeout_s = timeout_s
        self.fired = False
        self._on_stuck = on_stuck
        self._sends_in_flight = 0
        self._in_flight_since_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(self._check_every_s, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def began(self) -> None:
        """A send begins (sends may overlap: the oldest one in flight counts)."""
        if self._sends_in_flight == 0 and self._loop is not None:
            self._in_flight_since_s = self._loop.time()
        self._sends_in_flight += 1

    def ended(self) -> None:
        self._sends_in_flight -= 1

    @property
    def _check_every_s(self) -> float:
        return self.timeout_s / CHECKS_PER_TIMEOUT

    def _check(self) -> None:
        if self._loop is None:
            return
        stuck_s = self._loop.time() - self._in_flight_since_s
        if self._sends_in_flight and stuck_s >= self.timeout_s:
            self.fired = True
            self._on_stuck()
            return
        self._timer = self._loop.call_later(self._check_every_s, self._check)
