"""What a handler can say besides success: come back later, or never.

Any other exception is a failed attempt, retried with backoff until retry_attempts.
"""

from __future__ import annotations


class HandlerSignal(Exception):
    """The root of the outcomes a handler raises on purpose."""


class RetryLater(HandlerSignal):
    """The other side is busy: retry after delay_s (or with backoff when None), and do not
    count this as a failed attempt."""

    def __init__(self, reason: str, delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s


class PermanentFailure(HandlerSignal):
    """Retrying cannot help (the request itself is refused): dead-letter the task now."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
