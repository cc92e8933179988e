"""How an HTTP answer decides a task's fate; pure, so it is tested as a table.

- 2xx: done.
- 429 or 503: the service is busy. Retry at its Retry-After (seconds or an HTTP date), or
  with backoff; not a failed attempt.
- 408 and other 5xx: a failed attempt, retried with backoff (as are timeouts and connection
  errors, which never reach here).
- Any other status: the request is refused and would be refused again: dead-letter now,
  naming the status and the start of the body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from service.tasks.handlers.outcomes import PermanentFailure, RetryLater

BODY_EXCERPT_CHARS = 200
BUSY_STATUSES = (429, 503)


class FailedAttempt(Exception):
    """A status worth retrying with backoff, counted as a failed attempt."""


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def check_status(
    service: str, status: int, retry_after: str | None, body: str, now: datetime
) -> None:
    """Return for a 2xx; otherwise raise RetryLater, FailedAttempt or PermanentFailure."""
    if 200 <= status < 300:
        return
    excerpt = " ".join(body[:BODY_EXCERPT_CHARS].split())
    said = f"{service} answered {status}: {excerpt}" if excerpt else f"{service} answered {status}"
    if status in BUSY_STATUSES:
        raise RetryLater(said, parse_retry_after(retry_after, now))
    if status == 408 or status >= 500:
        raise FailedAttempt(said)
    raise PermanentFailure(said)
