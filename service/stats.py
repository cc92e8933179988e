"""Pure folding of XINFO STREAM and XINFO GROUPS replies into the stats and health documents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


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
    return {"id": entry_id, "fields": dict(fields or {})}


def fold_group(group: Mapping[str, Any]) -> dict[str, Any]:
    """One XINFO GROUPS row, with the names the API uses."""
    return {
        "name": group["name"],
        "consumers": int(group.get("consumers", 0)),
        "pending": int(group.get("pending", 0)),
        "last_delivered_id": group.get("last-delivered-id", ""),
        "lag": group.get("lag"),
    }


def fold_stream(stream: StreamInfo) -> dict[str, Any]:
    """Stats of one stream as served by /events/stats."""
    info = stream.info or {}
    groups = [fold_group(group) for group in stream.groups]
    return {
        "exists": stream.info is not None,
        "length": int(info.get("length", 0)),
        "first_entry": _entry(info.get("first-entry")),
        "last_entry": _entry(info.get("last-entry")),
        "last_generated_id": info.get("last-generated-id"),
        # Redis's running count of XADDs, untouched by trimming: rates are differences of it.
        "entries_added": info.get("entries-added"),
        "consumer_groups": [group["name"] for group in groups],
        "groups": groups,
    }


def fold_stats(streams: Sequence[StreamInfo], dead_letters: int, timestamp: str) -> dict[str, Any]:
    """The /events/stats document."""
    return {
        "streams": {stream.name: fold_stream(stream) for stream in streams},
        "dead_letters": dead_letters,
        "timestamp": timestamp,
    }


def fold_health(
    streams: Sequence[StreamInfo],
    expected: Mapping[str, Sequence[str]],
    latency_ms: float,
) -> dict[str, Any]:
    """The /health/detailed document: up, or degraded when a stream or group is missing."""
    by_name = {stream.name: stream for stream in streams}
    report: dict[str, Any] = {}
    missing: list[str] = []
    for name, wanted_groups in expected.items():
        stream = by_name.get(name)
        if stream is None or stream.info is None:
            missing.append(f"stream {name}")
            report[name] = {"length": 0, "consumers": 0, "groups": []}
            continue
        group_names = [group["name"] for group in stream.groups]
        missing.extend(
            f"group {name}/{group}" for group in wanted_groups if group not in group_names
        )
        report[name] = {
            "length": int(stream.info.get("length", 0)),
            "consumers": sum(int(group.get("consumers", 0)) for group in stream.groups),
            "groups": group_names,
        }
    document: dict[str, Any] = {
        "status": "degraded" if missing else "up",
        "latency_ms": round(latency_ms, 3),
        "streams": report,
    }
    if missing:
        document["missing"] = missing
    return document
