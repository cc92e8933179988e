"""Redis stream entry ids: validation, ordering and the resume points clients send."""

from __future__ import annotations

import re

EVERYTHING = "0"
ONLY_NEW = "$"
_ENTRY_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")


class InvalidStreamId(ValueError):
    """A client sent something that is not a stream entry id."""


def parse_entry_id(value: str) -> tuple[int, int]:
    """Split ``ms-seq`` (or a bare ``ms``) into integers for ordering."""
    match = _ENTRY_ID.match(value)
    if not match:
        raise InvalidStreamId(f"invalid stream id {value!r}: expected ms-seq, 0 or $")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms >= 2**64 or seq >= 2**64:
        raise InvalidStreamId(f"invalid stream id {value!r}: out of range")
    return ms, seq


def normalize_resume_point(value: str | None) -> str:
    """Validate a Last-Event-ID or last_id value; ``None`` and empty mean everything."""
    if value is None or value.strip() == "":
        return EVERYTHING
    value = value.strip()
    if value == ONLY_NEW:
        return ONLY_NEW
    ms, seq = parse_entry_id(value)
    return f"{ms}-{seq}"


def is_after(entry_id: str, cursor: str) -> bool:
    """True when entry_id comes strictly after cursor in stream order."""
    return parse_entry_id(entry_id) > parse_entry_id(cursor)
