"""W3C Trace Context's ``traceparent``, parsed and formatted: pure, no OpenTelemetry needed.

A value is ``version-trace_id-parent_id-flags`` in lowercase hex (2-32-16-2 digits). As the
recommendation asks (https://www.w3.org/TR/trace-context/#traceparent-header), a value that
cannot be parsed is ignored, never an error: an all-zero trace or parent id, version ``ff``,
upper case, or a version-00 value of any other length. A later version is read by its first
55 characters when the next one is ``-``, and kept as version 00, the one this code speaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TRACEPARENT_HEADER = "traceparent"
# The metadata key of the events written for a traced task.
TRACEPARENT_METADATA_KEY = "traceparent"
_VERSION_00_LENGTH = 55
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})"
)
_INVALID_VERSION = "ff"
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """One traceparent: the trace, the caller's span in it, and the trace flags."""

    trace_id: str
    parent_id: str
    flags: str = "01"

    def header(self) -> str:
        """The version-00 header value."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)


def parse_traceparent(value: str) -> TraceParent | None:
    """The traceparent in a header value, or None when it is malformed."""
    value = value.strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version = match["version"]
    if version == _INVALID_VERSION:
        return None
    if version == "00" and len(value) != _VERSION_00_LENGTH:
        return None
    if len(value) > _VERSION_00_LENGTH and value[_VERSION_00_LENGTH] != "-":
        return None
    if match["trace_id"] == _ZERO_TRACE_ID or match["parent_id"] == _ZERO_PARENT_ID:
        return None
    return TraceParent(match["trace_id"], match["parent_id"], match["flags"])


def normalized_traceparent(value: str | None) -> str:
    """The version-00 form of a header value, or "" when it is absent or malformed."""
    if not value:
        return ""
    parsed = parse_traceparent(value)
    return parsed.header() if parsed else ""


def trace_metadata(traceparent: str) -> dict[str, str]:
    """An event's metadata for a task with this traceparent: empty when it has none."""
    return {TRACEPARENT_METADATA_KEY: traceparent} if traceparent else {}
