"""Pure wire formats: stream-entry fields of events and tasks, and the SSE and WebSocket frames.

Choices kept from the original design:
- event entries hold event_id, type, timestamp, job_id, data (JSON) and metadata (JSON);
- the SSE data line is ``{"event_id", "job_id", "timestamp", ...data, "metadata"}``.

Choices made since:
- The envelope wins. In the SSE data line the keys event_id, job_id, timestamp and metadata
  always come from the envelope; a ``data`` key of the same name is left out there (the
  WebSocket message keeps ``data`` whole under its own key), so no payload can relabel an
  event for a ``job_id=`` subscriber.
- SSE and WebSocket carry the same event: SSE gets metadata too, and its ``event:`` and
  ``id:`` lines hold what WebSocket sends as ``type`` and ``id``.
- Frames are UTF-8 JSON without NaN or Infinity, which every client's JSON.parse accepts.

Decoding an event is lenient, because anything (redis-cli, another service) may XADD to the
events stream and the fan-out must keep going: a data field that is not a JSON object is
wrapped (``{"raw": ...}`` or ``{"value": ...}``). An entry that cannot be served at all (bytes
that are not UTF-8, JSON nested past the recursion limit) raises UnreadableEntry, and the
fan-out skips it. Task entries are service.tasks'.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.jsonsafe import dumps, printable

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
UNTYPED_EVENT = "message"


def utc_now_iso() -> str:
    """The current time as timezone-aware UTC ISO 8601."""
    return datetime.now(UTC).isoformat()


def is_event_type(value: str) -> bool:
    """True for a dotted lowercase type such as ``ingestion.progress``."""
    return bool(_EVENT_TYPE.match(value))


class UnreadableEntry(ValueError):
    """A stream entry that cannot be served as an event; the message says why."""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _json_object_or_raw(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return {"raw": text}
    except RecursionError:
        raise UnreadableEntry("data or metadata is JSON nested too deep to handle") from None
    return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True, slots=True)
class Event:
    """One event as stored on the events stream."""

    type: str
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: str = field(default_factory=utc_now_iso)
    job_id: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_fields(self) -> dict[str, str]:
        """Stream-entry fields for XADD."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "timestamp": self.timestamp,
            "job_id": self.job_id,
            "data": json.dumps(self.data, separators=(",", ":")),
            "metadata": json.dumps(self.metadata, separators=(",", ":")),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Event:
        """Decode stream-entry fields, filling what a foreign writer left out.

        Raises UnreadableEntry only for JSON nested past the recursion limit.
        """
        # Whitespace would end the SSE event line early and let the type inject fields.
        event_type = "".join((fields.get("type") or "").split()) or UNTYPED_EVENT
        return cls(
            type=event_type,
            event_id=fields.get("event_id", ""),
            timestamp=fields.get("timestamp", ""),
            job_id=fields.get("job_id", ""),
            data=_json_object_or_raw(fields.get("data")),
            metadata=_json_object_or_raw(fields.get("metadata")),
        )


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event read from the stream, encoded once for every SSE and WebSocket client."""

    entry_id: str
    type: str
    job_id: str
    sse: bytes
    ws: str


# The SSE data line's envelope keys, which a data key of the same name never overrides.
SSE_ENVELOPE_KEYS = ("event_id", "job_id", "timestamp", "metadata")


def sse_data(event: Event) -> str:
    """The JSON of the SSE data line: event_id, job_id, timestamp, data keys, metadata."""
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "job_id": event.job_id,
        "timestamp": event.timestamp,
    }
    for key, value in event.data.items():
        payload.setdefault(key, value)
    payload["metadata"] = event.metadata
    return dumps(payload)


def encode_sse(entry_id: str, event: Event) -> bytes:
    """One SSE message: event, id and data lines, then a blank line.

    Raises UnicodeEncodeError when a value holds a lone surrogate (bytes that were not UTF-8),
    and ValueError for NaN or Infinity.
    """
    return f"event: {event.type}\nid: {entry_id}\ndata: {sse_data(event)}\n\n".encode()


def encode_ws(entry_id: str, event: Event) -> str:
    """One WebSocket text message."""
    return dumps(
        {
            "id": entry_id,
            "type": event.type,
            "event_id": event.event_id,
            "job_id": event.job_id,
            "timestamp": event.timestamp,
            "data": event.data,
            "metadata": event.metadata,
        }
    )


def encode_for_clients(entry_id: str, fields: Mapping[str, str]) -> EncodedEvent:
    """Decode a stream entry and encode it for both transports, or raise UnreadableEntry."""
    try:
        event = Event.from_fields(fields)
        sse = encode_sse(entry_id, event)
        ws = encode_ws(entry_id, event)
        # The WebSocket text is encoded per client later; fail here, once, not there.
        ws.encode()
    except UnicodeEncodeError:
        raise UnreadableEntry("a field is not UTF-8 text") from None
    except RecursionError:
        raise UnreadableEntry("JSON nested too deep to encode") from None
    except UnreadableEntry:
        raise
    except ValueError as error:
        raise UnreadableEntry(f"cannot be encoded as JSON: {error}") from None
    return EncodedEvent(entry_id=entry_id, type=event.type, job_id=event.job_id, sse=sse, ws=ws)


def encode_sse_error(message: str, resume_id: str) -> bytes:
    """The error event sent before a stream closes; it tells the client where to resume."""
    data = dumps({"error": printable(message), "resume_from": resume_id})
    return f"event: error\ndata: {data}\n\n".encode()


def encode_ws_error(message: str, resume_id: str) -> str:
    """The WebSocket counterpart of encode_sse_error."""
    return json.dumps({"type": "error", "error": printable(message), "resume_from": resume_id})


def gap_notice(after_id: str, first_held_id: str | None) -> dict[str, str | None]:
    """What a client resuming across trimmed history is told: the first id still held.

    Like Mercure's earliest-id answer; the client knows that events after ``after_id`` and
    before ``first_id`` were trimmed before it could read them.
    """
    return {"after": after_id, "first_id": first_held_id}


def encode_sse_gap(after_id: str, first_held_id: str | None) -> bytes:
    """The ``gap`` event sent first when history the client asked for is gone.

    It has no id line, so a reconnect still resumes from the client's own last id.
    """
    return f"event: gap\ndata: {dumps(gap_notice(after_id, first_held_id))}\n\n".encode()


def encode_ws_gap(after_id: str, first_held_id: str | None) -> str:
    """The WebSocket counterpart of encode_sse_gap."""
    return dumps({"type": "gap", **gap_notice(after_id, first_held_id)})
