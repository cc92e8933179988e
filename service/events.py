"""Pure wire formats: stream-entry fields of events and tasks, and the SSE and WebSocket frames.

Choices kept from the original design:
- event entries hold event_id, type, timestamp, job_id, data (JSON) and metadata (JSON);
- the SSE data line is ``{"event_id", "job_id", "timestamp", ...data}``.

Decoding an event is lenient, because anything (redis-cli, another service) may XADD to the
events stream and the fan-out must keep going. Task entries are service.tasks'.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
UNTYPED_EVENT = "message"


def utc_now_iso() -> str:
    """The current time as timezone-aware UTC ISO 8601."""
    return datetime.now(UTC).isoformat()


def is_event_type(value: str) -> bool:
    """True for a dotted lowercase type such as ``ingestion.progress``."""
    return bool(_EVENT_TYPE.match(value))


def _json_object_or_raw(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
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
        """Decode stream-entry fields, filling what a foreign writer left out."""
        event_type = fields.get("type") or UNTYPED_EVENT
        return cls(
            type="".join(event_type.split()),
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


def sse_data(event: Event) -> str:
    """The JSON of the SSE data line: event_id, job_id and timestamp, then the data keys."""
    payload = {
        "event_id": event.event_id,
        "job_id": event.job_id,
        "timestamp": event.timestamp,
    }
    payload.update(event.data)
    return json.dumps(payload, separators=(",", ":"))


def encode_sse(entry_id: str, event: Event) -> bytes:
    """One SSE message: event, id and data lines, then a blank line."""
    return f"event: {event.type}\nid: {entry_id}\ndata: {sse_data(event)}\n\n".encode()


def encode_ws(entry_id: str, event: Event) -> str:
    """One WebSocket text message."""
    return json.dumps(
        {
            "id": entry_id,
            "type": event.type,
            "event_id": event.event_id,
            "job_id": event.job_id,
            "timestamp": event.timestamp,
            "data": event.data,
            "metadata": event.metadata,
        },
        separators=(",", ":"),
    )


def encode_for_clients(entry_id: str, fields: Mapping[str, str]) -> EncodedEvent:
    """Decode a stream entry and encode it for both transports."""
    event = Event.from_fields(fields)
    return EncodedEvent(
        entry_id=entry_id,
        type=event.type,
        job_id=event.job_id,
        sse=encode_sse(entry_id, event),
        ws=encode_ws(entry_id, event),
    )


def encode_sse_error(message: str, resume_id: str) -> bytes:
    """The error event sent before a stream closes; it tells the client where to resume."""
    data = json.dumps({"error": message, "resume_from": resume_id}, separators=(",", ":"))
    return f"event: error\ndata: {data}\n\n".encode()


def encode_ws_error(message: str, resume_id: str) -> str:
    """The WebSocket counterpart of encode_sse_error."""
    return json.dumps({"type": "error", "error": message, "resume_from": resume_id})
