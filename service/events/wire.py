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
- An SSE stream opens with ``retry:`` and an ``id:`` at the client's cursor, and no data: a
  browser's EventSource takes the id as its lastEventId without dispatching anything, so a
  quiet or filtered client that has received nothing still reconnects from where it started.
  While a filtered client is idle and the stream has moved past it, the same id-only message
  (about once per keepalive interval) moves its id forward.
- One ``onmessage`` handler for every event: with ``?unnamed=1`` SSE frames have no ``event:``
  line (EventSource dispatches them as ``message``) and the data line starts with ``"type"``,
  an envelope key like the others. Named frames stay the default, for addEventListener.
  Both are encoded once per entry (EncodedEvent.sse, .sse_unnamed), never per client.
- Server notices (a slow client dropped, a gap in history, shutdown, Redis lost, the fan-out
  restarting) are ``event: notice``, never ``error``, which EventSource keeps for its own
  connection failures. They carry an ``id:`` line at the id to resume from, and the data
  ``{"notice": kind, "message", "resume_from", ...}``; a WebSocket gets the same object with
  ``"type": "notice"``. Notices are named in both SSE modes: they are not events.
- A WebSocket client asking for ``?batch=1`` gets one JSON array per handout, joined from the
  per-entry texts (encode_ws_batch), not re-encoded; notices come as arrays of one.

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
from enum import StrEnum
from typing import Any

from service.core.json_safety import dumps, printable
from service.events.errors import EventError

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
UNTYPED_EVENT = "message"
NOTICE_EVENT = "notice"
# How long a browser waits before reconnecting; EventSource's own default is about 3 s.
SSE_RETRY_MS = 1000


class NoticeKind(StrEnum):
    """Why the server sends a notice; the ``notice`` key of its data."""

    SLOW_CLIENT = "slow_client"
    GAP = "gap"
    SHUTDOWN = "shutdown"
    REDIS_UNAVAILABLE = "redis_unavailable"
    RESTARTING = "restarting"


def utc_now_iso() -> str:
    """The current time as timezone-aware UTC ISO 8601."""
    return datetime.now(UTC).isoformat()


def is_event_type(value: str) -> bool:
    """True for a dotted lowercase type such as ``ingestion.progress``."""
    return bool(_EVENT_TYPE.match(value))


class UnreadableEntry(EventError, ValueError):
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
    sse_unnamed: bytes
    ws: str


# The SSE data line's envelope keys, which a data key of the same name never overrides.
SSE_ENVELOPE_KEYS = ("event_id", "job_id", "timestamp", "metadata")


def _sse_payload(event: Event) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "job_id": event.job_id,
        "timestamp": event.timestamp,
    }
    for key, value in event.data.items():
        payload.setdefault(key, value)
    payload["metadata"] = event.metadata
    return payload


def sse_data(event: Event) -> str:
    """The JSON of the SSE data line: event_id, job_id, timestamp, data keys, metadata."""
    return dumps(_sse_payload(event))


def sse_unnamed_data(event: Event) -> str:
    """The data line of an unnamed frame: ``type`` first, then as sse_data."""
    payload = _sse_payload(event)
    # type is envelope here, so a data key of that name gives way like the others.
    payload.pop("type", None)
    return dumps({"type": event.type, **payload})


def encode_sse(entry_id: str, event: Event) -> bytes:
    """One SSE message: event, id and data lines, then a blank line.

    Raises UnicodeEncodeError when a value holds a lone surrogate (bytes that were not UTF-8),
    and ValueError for NaN or Infinity.
    """
    return f"event: {event.type}\nid: {entry_id}\ndata: {sse_data(event)}\n\n".encode()


def encode_sse_unnamed(entry_id: str, event: Event) -> bytes:
    """One SSE message for onmessage: id and data lines (with the type), no event line."""
    return f"id: {entry_id}\ndata: {sse_unnamed_data(event)}\n\n".encode()


def encode_sse_opening(cursor: str, retry_ms: int = SSE_RETRY_MS) -> bytes:
    """The first bytes of a stream: the reconnect delay and the client's cursor, no event."""
    return f"retry: {retry_ms}\n".encode() + encode_sse_cursor(cursor)


def encode_sse_cursor(cursor: str) -> bytes:
    """An id line alone: it moves EventSource's lastEventId and dispatches nothing."""
    return f"id: {cursor}\n\n".encode()


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
        sse_unnamed = encode_sse_unnamed(entry_id, event)
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
    return EncodedEvent(
        entry_id=entry_id,
        type=event.type,
        job_id=event.job_id,
        sse=sse,
        sse_unnamed=sse_unnamed,
        ws=ws,
    )


def notice_data(
    kind: NoticeKind, message: str, resume_from: str, **extra: str | None
) -> dict[str, str | None]:
    """What every notice says: why, in words, and the id to resume from."""
    return {"notice": str(kind), "message": printable(message), "resume_from": resume_from, **extra}


def encode_sse_notice(
    kind: NoticeKind, message: str, resume_from: str, **extra: str | None
) -> bytes:
    """A server notice: ``event: notice``, an id line at resume_from, the notice data."""
    data = dumps(notice_data(kind, message, resume_from, **extra))
    return f"event: {NOTICE_EVENT}\nid: {resume_from}\ndata: {data}\n\n".encode()


def encode_ws_notice(kind: NoticeKind, message: str, resume_from: str, **extra: str | None) -> str:
    """The WebSocket counterpart of encode_sse_notice: the same data, with type notice."""
    return dumps({"type": NOTICE_EVENT, **notice_data(kind, message, resume_from, **extra)})


def _gap_message(first_held_id: str | None) -> str:
    if first_held_id is None:
        return "history after the resume id was trimmed; nothing is held"
    return f"history after the resume id was trimmed; the first id held is {first_held_id}"


def encode_sse_gap(after_id: str, first_held_id: str | None) -> bytes:
    """The gap notice sent first when history the client asked for is gone.

    Like Mercure's earliest-id answer: events after ``after`` and before ``first_id`` were
    trimmed before the client could read them. Its id is the client's own resume id.
    """
    return encode_sse_notice(
        NoticeKind.GAP, _gap_message(first_held_id), after_id, after=after_id,
        first_id=first_held_id,
    )  # fmt: skip


def encode_ws_gap(after_id: str, first_held_id: str | None) -> str:
    """The WebSocket counterpart of encode_sse_gap."""
    return encode_ws_notice(
        NoticeKind.GAP, _gap_message(first_held_id), after_id, after=after_id,
        first_id=first_held_id,
    )  # fmt: skip


def encode_ws_batch(messages: list[str]) -> str:
    """Several WebSocket messages (already JSON) as one JSON array, joined, not re-encoded."""
    return "[" + ",".join(messages) + "]"
