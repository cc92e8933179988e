"""Exact-text tests of traceparent parsing and formatting (W3C Trace Context, level 1)."""

from __future__ import annotations

import pytest

from service.core.trace_context import (
    TraceParent,
    normalized_traceparent,
    parse_traceparent,
    trace_metadata,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (VALID, TraceParent(TRACE_ID, PARENT_ID, "01")),
        (f"00-{TRACE_ID}-{PARENT_ID}-00", TraceParent(TRACE_ID, PARENT_ID, "00")),
        # Optional whitespace around a header value is not part of it.
        (f" {VALID}\t", TraceParent(TRACE_ID, PARENT_ID, "01")),
        # A later version: its first 55 characters, when a dash follows them.
        (f"cc-{TRACE_ID}-{PARENT_ID}-09", TraceParent(TRACE_ID, PARENT_ID, "09")),
        (f"cc-{TRACE_ID}-{PARENT_ID}-09-what-comes-next", TraceParent(TRACE_ID, PARENT_ID, "09")),
    ],
)
def test_valid_traceparents_parse(header: str, parsed: TraceParent) -> None:
    assert parse_traceparent(header) == parsed


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        VALID.upper(),
        VALID + "-",  # version 00 has exactly four parts
        VALID[:-1],
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is forbidden
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"cc-{TRACE_ID}-{PARENT_ID}-01x",  # a later version must go on with a dash
        f"0-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID}-{PARENT_ID}-0g",
    ],
)
def test_malformed_traceparents_are_none(header: str) -> None:
    assert parse_traceparent(header) is None
    assert normalized_traceparent(header) == ""


def test_a_traceparent_formats_as_version_00() -> None:
    assert TraceParent(TRACE_ID, PARENT_ID, "01").header() == VALID
    assert normalized_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01-more") == VALID
    assert normalized_traceparent(None) == ""


def test_the_sampled_flag_is_the_lowest_bit() -> None:
    assert TraceParent(TRACE_ID, PARENT_ID, "01").sampled
    assert TraceParent(TRACE_ID, PARENT_ID, "03").sampled
    assert not TraceParent(TRACE_ID, PARENT_ID, "02").sampled


def test_event_metadata_holds_a_traceparent_only_when_there_is_one() -> None:
    assert trace_metadata(VALID) == {"traceparent": VALID}
    assert trace_metadata("") == {}
