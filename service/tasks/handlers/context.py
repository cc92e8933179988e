"""What a handler that takes a second parameter is given: progress, retry_after, cancelled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from service.tasks.handlers.outcomes import RetryLater

ProgressSink = Callable[[float, str], None]


class CancelFlag:
    """Set on the worker's loop, read from any thread: one attribute, so it costs a task
    nothing until its job is cancelled (a threading.Event made per task cost more than a
    no-op handler's whole call)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """One attempt at one task, as its handler sees it."""

    message_id: str
    job_id: str
    chunk_id: str
    idempotency_key: str
    _report_progress: ProgressSink
    # W3C traceparent for the calls this attempt makes: its span's when the worker traces,
    # else the one the task was submitted with; "" when untraced.
    traceparent: str = ""
    _cancel: CancelFlag = field(default_factory=CancelFlag)

    @property
    def cancelled(self) -> bool:
        """True once the task's job is cancelled (DELETE /jobs/{id}): a handler that can stop
        should, raising any error; the chunk then counts as cancelled, not failed."""
        return self._cancel.is_set()

    def progress(self, fraction: float, message: str = "") -> None:
        """Emit ``ingestion.progress`` with this chunk's id, the fraction (0 to 1) and a
        message. Safe from a sync handler's thread; it does not wait for Redis."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be between 0 and 1, not {fraction}")
        self._report_progress(fraction, message)

    def retry_after(self, seconds: float) -> None:
        """Ask for a retry `seconds` from now, not counted as a failed attempt; raises, so
        the handler's work ends here."""
        raise RetryLater(f"the handler asked for a retry in {seconds:g} s", max(0.0, seconds))
