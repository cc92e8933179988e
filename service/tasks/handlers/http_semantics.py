"""How an HTTP answer decides a task's fate; pure, so it is tested as a table.

- 2xx: done.
- 429 or 503: the service is busy. Retry at its Retry-After (seconds or an HTTP date), or
  with backoff; not a failed attempt.
- 408 and other 5xx: a failed attempt, retried with backoff (as are timeouts and connection
  errors, which never reach here).
- Any other status (other 4xx, and the 1xx and 3xx a client that follows no redirect may
  see): the request is refused and would be refused again: dead-letter now, naming the
  status and the start of the body.

What a reason shows is what anyone who reads the dead letters, the events or the worker's log
sees: URLs lose their credentials and query, and the configured secrets are cut out of the
body before its excerpt is taken.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from service.tasks.handlers.outcomes import PermanentFailure, RetryLater

BODY_EXCERPT_CHARS = 200
BUSY_STATUSES = (429, 503)
# A Retry-After beyond this is a typo or hostile; a day still outlasts lease_max_ms's default,
# and it keeps the due time a date that Python and Redis can hold.
MAX_RETRY_AFTER_S = 86_400.0
REDACTED = "[redacted]"
_DELTA_SECONDS = re.compile(r"[0-9]+")


class FailedAttempt(Exception):
    """A status worth retrying with backoff, counted as a failed attempt."""


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None
    when it is absent or unreadable; never negative, never more than MAX_RETRY_AFTER_S."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(MAX_RETRY_AFTER_S, float(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER_S, max(0.0, (when - now).total_seconds()))


def redact(text: str, secrets: Iterable[str]) -> str:
    """The text with every non-empty secret replaced by REDACTED."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def body_excerpt(body: str, secrets: Iterable[str] = ()) -> str:
    """The first BODY_EXCERPT_CHARS characters of a body, secrets cut out first (so no
    part of one survives at the cut), whitespace folded onto one line."""
    return " ".join(redact(body, secrets)[:BODY_EXCERPT_CHARS].split())


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts


def shown_url(url: str) -> str:
    """The URL as errors and logs may show it: no credentials, no query, no fragment."""
    parts = _split(url)
    if parts is None:
        return "(an invalid URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its user:password, and that pair (None when there is none): sent
    as an auth header, the credentials are no longer part of any URL a log line shows."""
    parts = _split(url)
    if parts is None or (parts.username is None and parts.password is None):
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def check_status(
    service: str,
    status: int,
    retry_after: str | None,
    body: str,
    now: datetime,
    secrets: Iterable[str] = (),
) -> None:
    """Return for a 2xx; otherwise raise RetryLater, FailedAttempt or PermanentFailure."""
    if 200 <= status < 300:
        return
    excerpt = body_excerpt(body, secrets)
    said = f"{service} answered {status}: {excerpt}" if excerpt else f"{service} answered {status}"
    if status in BUSY_STATUSES:
        raise RetryLater(said, parse_retry_after(retry_after, now))
    if status == 408 or status >= 500:
        raise FailedAttempt(said)
    raise PermanentFailure(said)
