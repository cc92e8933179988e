"""What an HTTP answer means for a task: pure tables of input → outcome."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.tasks.handlers.http_semantics import (
    BODY_EXCERPT_CHARS,
    MAX_RETRY_AFTER_S,
    REDACTED,
    FailedAttempt,
    body_excerpt,
    check_status,
    parse_retry_after,
    shown_url,
    split_credentials,
)
from service.tasks.handlers.outcomes import PermanentFailure, RetryLater

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
SERVICE = "the handler at http://127.0.0.1:9/hook"


def outcome(status: int, retry_after: str | None = None, body: str = "") -> object:
    """The exception check_status raises, or None for done."""
    try:
        check_status(SERVICE, status, retry_after, body, NOW)
    except (RetryLater, FailedAttempt, PermanentFailure) as raised:
        return raised
    return None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (201, None),
        (202, None),
        (204, None),
        (299, None),
        (429, RetryLater),
        (503, RetryLater),
        (408, FailedAttempt),
        (500, FailedAttempt),
        (502, FailedAttempt),
        (504, FailedAttempt),
        (599, FailedAttempt),
        (400, PermanentFailure),
        (401, PermanentFailure),
        (403, PermanentFailure),
        (404, PermanentFailure),
        (409, PermanentFailure),
        (410, PermanentFailure),
        (413, PermanentFailure),
        (422, PermanentFailure),
        (301, PermanentFailure),
        (304, PermanentFailure),
        (100, PermanentFailure),
    ],
)
def test_each_status_has_one_outcome(status: int, expected: type | None) -> None:
    result = outcome(status)
    if expected is None:
        assert result is None
    else:
        assert type(result) is expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("1", 1.0),
        (" 120 ", 120.0),
        ("Mon, 30 Nov 2026 12:00:30 GMT", 30.0),
        ("Monday, 30-Nov-26 12:01:00 GMT", 60.0),
        ("Mon, 30 Nov 2026 11:00:00 GMT", 0.0),  # a date already past: at once
        ("Mon, 30 Nov 2026 12:00:10", 10.0),  # no zone: read as UTC
        ("999999999999", MAX_RETRY_AFTER_S),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_S),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("nan", None),
        ("²", None),  # a digit to str.isdigit, not to float()
        ("Mon, 01 Jan 99999 00:00:00 GMT", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date_or_nothing(
    header: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "retry_after", "delay_s"),
    [(429, "7", 7.0), (503, "Mon, 30 Nov 2026 12:00:02 GMT", 2.0), (429, "garbage", None)],
)
def test_a_busy_answer_carries_its_delay_or_leaves_it_to_backoff(
    status: int, retry_after: str, delay_s: float | None
) -> None:
    result = outcome(status, retry_after, "slow down")
    assert isinstance(result, RetryLater)
    assert result.delay_s == delay_s
    assert result.reason == f"{SERVICE} answered {status}: slow down"


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("", f"{SERVICE} answered 400"),
        ("bad chunk", f"{SERVICE} answered 400: bad chunk"),
        ("a\n  b\r\n\tc", f"{SERVICE} answered 400: a b c"),
        ("x" * 500, f"{SERVICE} answered 400: " + "x" * BODY_EXCERPT_CHARS),
        ("é" * 300, f"{SERVICE} answered 400: " + "é" * BODY_EXCERPT_CHARS),
    ],
)
def test_a_refusal_names_the_status_and_the_first_200_characters(body: str, shown: str) -> None:
    result = outcome(400, body=body)
    assert isinstance(result, PermanentFailure)
    assert result.reason == shown


@pytest.mark.parametrize(
    ("body", "excerpt"),
    [
        ("Authorization: Bearer s3cret-token was refused", f"Authorization: Bearer {REDACTED} "
         "was refused"),
        ("x" * 195 + "s3cret-token", "x" * 195 + REDACTED[:5]),  # cut after, not before
        ("user hunter2 s3cret-token", f"user {REDACTED} {REDACTED}"),
    ],
)  # fmt: skip
def test_a_body_excerpt_never_shows_a_secret(body: str, excerpt: str) -> None:
    assert body_excerpt(body, ["s3cret-token", "hunter2", ""]) == excerpt


def test_a_status_reason_never_shows_a_secret() -> None:
    with pytest.raises(FailedAttempt) as raised:
        check_status(SERVICE, 500, None, "echo: Bearer s3cret-token", NOW, ["s3cret-token"])
    assert "s3cret-token" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8000/hook", "http://127.0.0.1:8000/hook"),
        ("https://user:pass@example.com/hook?token=abc#frag", "https://example.com/hook"),
        ("https://user@example.com:8443/a/b", "https://example.com:8443/a/b"),
        ("http://[::1]:8000/hook", "http://[::1]:8000/hook"),
        ("http://example.com:notaport/hook", "(an invalid URL)"),
    ],
)
def test_a_shown_url_has_no_credentials_and_no_query(url: str, shown: str) -> None:
    assert shown_url(url) == shown


@pytest.mark.parametrize(
    ("url", "bare", "credentials"),
    [
        ("http://127.0.0.1:8000/hook", "http://127.0.0.1:8000/hook", None),
        ("http://u:p@127.0.0.1:8000/hook?x=1", "http://127.0.0.1:8000/hook?x=1", ("u", "p")),
        ("http://u%40corp:p%2Fw@h/hook", "http://h/hook", ("u@corp", "p/w")),
        ("http://u@h/hook", "http://h/hook", ("u", "")),
    ],
)
def test_credentials_leave_the_url_to_be_sent_as_auth(
    url: str, bare: str, credentials: tuple[str, str] | None
) -> None:
    assert split_credentials(url) == (bare, credentials)
