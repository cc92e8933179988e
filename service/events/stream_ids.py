"""Redis stream entry ids: validation, ordering and the resume points clients send.

Pure: the stream's bounds are read elsewhere (service.bus) and handed in as StreamBounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.events.errors import EventError

EVERYTHING = "0"
ONLY_NEW = "$"
FIRST_ID = "0-0"
_ENTRY_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
_ID_LIMIT = 2**64
# Redis can store this id but refuses it as an exclusive start: nothing can follow it.
_LAST_POSSIBLE = (_ID_LIMIT - 1, _ID_LIMIT - 1)


class InvalidStreamId(EventError, ValueError):
    """A client sent something that is not a usable stream entry id."""


def parse_entry_id(value: str) -> tuple[int, int]:
    """Split ``ms-seq`` (or a bare ``ms``) into integers for ordering."""
    match = _ENTRY_ID.match(value)
    if not match:
        raise InvalidStreamId(f"invalid stream id {value!r}: expected ms-seq, 0 or $")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms >= _ID_LIMIT or seq >= _ID_LIMIT:
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
    if (ms, seq) == _LAST_POSSIBLE:
        raise InvalidStreamId(f"invalid stream id {value!r}: no entry can come after it")
    return f"{ms}-{seq}"


def is_after(entry_id: str, cursor: str) -> bool:
    """True when entry_id comes strictly after cursor in stream order."""
    return parse_entry_id(entry_id) > parse_entry_id(cursor)


@dataclass(frozen=True, slots=True)
class StreamBounds:
    """What a new subscription needs to know about the stream (XINFO STREAM, read once)."""

    first_id: str | None = None
    last_generated_id: str = FIRST_ID
    entries_removed: int = 0


@dataclass(frozen=True, slots=True)
class StartPoint:
    """Where a subscription starts, and whether history it asked for is gone.

    ``gap`` is true when the client resumes from an id older than the oldest entry the stream
    still holds and entries have been trimmed or deleted: what came in between is lost, and
    the client is told so (with ``first_held_id``, None when nothing is held) instead of
    silently skipping it.
    """

    cursor: str
    gap: bool = False
    first_held_id: str | None = None


def plan_start(resume_point: str, bounds: StreamBounds) -> StartPoint:
    """Turn a normalized resume point into a start point, refusing ids from the future."""
    if resume_point == EVERYTHING:
        return StartPoint(FIRST_ID, first_held_id=bounds.first_id)
    if resume_point == ONLY_NEW:
        return StartPoint(bounds.last_generated_id, first_held_id=bounds.first_id)
    if is_after(resume_point, bounds.last_generated_id):
        raise InvalidStreamId(
            f"stream id {resume_point} is after the stream's last id"
            f" {bounds.last_generated_id}: no such event was ever sent"
        )
    first_held = bounds.first_id
    oldest_wanted_is_gone = (
        is_after(first_held, resume_point)
        if first_held is not None
        else is_after(bounds.last_generated_id, resume_point)
    )
    gap = resume_point != FIRST_ID and bounds.entries_removed > 0 and oldest_wanted_is_gone
    return StartPoint(resume_point, gap=gap, first_held_id=first_held)
