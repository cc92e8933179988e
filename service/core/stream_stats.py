"""Pure folding of XINFO STREAM and XINFO GROUPS replies into the stats and health documents.

Every name and field read from Redis passes through printable(): anyone can write bytes that
are not UTF-8 into a stream, and the documents must still be JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.core.json_safety import printable
from service.events.stream_ids import FIRST_ID, InvalidStreamId, is_after


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What Redis said about one stream; info is None when the stream does not exist."""

    name: str
    info: Mapping[str, Any] | None
    groups: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


def _entry(entry: Any) -> dict[str, Any] | None:
    if not entry:
        return None
    entry_id, fields = entry
    return {
        "id": printable(str(entry_id)),
        "fields": {printable(str(k)): printable(str(v)) for k, v in (fields or {}).items()},
    }


def _entry_id(entry: Any) -> str | None:
    return printable(str(entry[0])) if entry else None


def _int_or_none(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _missed_entries(group: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
    """True when entries were trimmed or deleted before this group read them.

    Trimming removes the oldest entries. A group whose last delivered id comes before the
    first entry still held, and which has read fewer entries than the stream has lost, can
    never see some of them; Redis's lag does not count those.
    """
    first = info.get("first-entry")
    first_id = str(first[0]) if first else None
    removed = int(info.get("entries-added") or 0) - int(info.get("length") or 0)
    if removed <= 0:
        return False
    delivered = str(group.get("last-delivered-id") or FIRST_ID)
    try:
        behind = first_id is None or is_after(first_id, delivered)
    except InvalidStreamId:
        return False
    read = _int_or_none(group.get("entries-read"))
    return behind and (read is None or read < removed)


def fold_group(group: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One XINFO GROUPS row, with the names the API uses.

    ``lag`` is Redis's count of entries not yet delivered to the group, or None when Redis
    cannot tell (after deletions); ``missed_entries`` says whether the group has lost entries
    to trimming, which lag leaves out. A group delivered the newest entry has lag 0, whatever
    Redis says: after a failover, the promoted replica's count can be off by the stream's
    whole history (redis/redis#12898, fixed in Redis 7.2.4).
    """
    lag = _int_or_none(group.get("lag"))
    newest = (info or {}).get("last-generated-id")
    if newest is not None and group.get("last-delivered-id") == newest:
        lag = 0
    return {
        "name": printable(str(group["name"])),
        "consumers": int(group.get("consumers", 0)),
        "pending": int(group.get("pending", 0)),
        "last_delivered_id": printable(str(group.get("last-delivered-id", ""))),
        "entries_read": _int_or_none(group.get("entries-read")),
        "lag": lag,
        "lag_known": lag is not None,
        "missed_entries": _missed_entries(group, info or {}),
    }


def fold_stream(stream: StreamInfo) -> dict[str, Any]:
    """Stats of one stream as served by /events/stats."""
    info = stream.info or {}
    groups = [fold_group(group, info) for group in stream.groups]
    return {
        "exists": stream.info is not None,
        "length": int(info.get("length", 0)),
        # Redis's running count of XADDs, untouched by trimming: rates are differences of it.
        "entries_added": int(info.get("entries-added") or 0),
        # The original design's ids, and the entries themselves under names of their own.
        "first_entry": _entry_id(info.get("first-entry")),
        "last_entry": _entry_id(info.get("last-entry")),
        "first_entry_detail": _entry(info.get("first-entry")),
        "last_entry_detail": _entry(info.get("last-entry")),
        "last_generated_id": info.get("last-generated-id"),
        "consumer_groups": [group["name"] for group in groups],
        "groups": groups,
    }


def fold_stats(
    streams: Sequence[StreamInfo], dead_letters: int, waiting: int, timestamp: str
) -> dict[str, Any]:
    """The /events/stats document; `waiting` counts tasks held until their retry is due."""
    return {
        "streams": {stream.name: fold_stream(stream) for stream in streams},
        "dead_letters": dead_letters,
        "waiting_retries": waiting,
        "timestamp": timestamp,
    }


def fold_health(
    streams: Sequence[StreamInfo],
    expected: Mapping[str, Sequence[str]],
    latency_ms: float,
    fanout_running: bool = True,
) -> dict[str, Any]:
    """The /health/detailed document: up, or degraded when something is missing or stopped."""
    by_name = {stream.name: stream for stream in streams}
    report: dict[str, Any] = {}
    missing: list[str] = []
    for name, wanted_groups in expected.items():
        stream = by_name.get(name)
        if stream is None or stream.info is None:
            missing.append(f"stream {name}")
            report[name] = {"length": 0, "consumers": 0, "connected_consumers": 0, "groups": []}
            continue
        group_names = [str(group["name"]) for group in stream.groups]
        missing.extend(
            f"group {name}/{group}" for group in wanted_groups if group not in group_names
        )
        report[name] = {
            "length": int(stream.info.get("length", 0)),
            # The original design's count of consumer groups; the consumers connected to them
            # under a name of its own.
            "consumers": len(stream.groups),
            "connected_consumers": sum(int(group.get("consumers", 0)) for group in stream.groups),
            "groups": [printable(group) for group in group_names],
        }
    document: dict[str, Any] = {
        "status": "degraded" if missing or not fanout_running else "up",
        "latency_ms": round(latency_ms, 3),
        "fanout": "running" if fanout_running else "restarting",
        "streams": report,
    }
    if missing:
        document["missing"] = missing
    return document
