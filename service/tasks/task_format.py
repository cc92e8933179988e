"""The task entry's wire format, defined once: encode for XADD, decode strictly, or refuse.

A task entry holds the fields of ``Task`` (the original design's job_id, chunk_id, content,
source_uri, source_type, metadata as JSON, retry_count and timestamp), ``traceparent`` only
when the task was submitted with one, and ``busy_count`` only once the handler has answered
busy: entries written before either existed decode as they did (no trace, never busy), and a
task that needs neither costs nothing. Decoding is strict,
because a task that cannot be understood belongs in the dead-letter stream with its reason,
and it never raises anything but MalformedTask: anyone with redis-cli can write to the stream.
The one exception is a malformed traceparent, which is dropped as W3C Trace Context asks: the
task itself is fine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from itertools import chain
from typing import Any

from service.core.raw_text import is_utf8
from service.core.trace_context import normalized_traceparent
from service.events.wire import utc_now_iso
from service.tasks.errors import TaskError

_REQUIRED = ("job_id", "chunk_id", "content")
# Written only when set, and kept out of the handler's payload: traceparent travels as a
# header, busy_count is the worker's own bookkeeping.
_OPTIONAL = frozenset({"traceparent", "busy_count"})
_COUNTS = ("retry_count", "busy_count")


class MalformedTask(TaskError, ValueError):
    """A task entry that no handler can be given: the message says why."""


@dataclass(frozen=True, slots=True)
class Task:
    """One task; every field but message_id is a field of its stream entry."""

    job_id: str
    chunk_id: str
    content: str
    source_uri: str = ""
    source_type: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    retry_count: int = 0
    timestamp: str = field(default_factory=utc_now_iso)
    # W3C traceparent (version 00) of the request that submitted the task; "" when untraced.
    traceparent: str = ""
    # How many times the handler answered busy (429, 503, retry_after) and the task was
    # deferred: not failed attempts, but the n-th such wait still grows with n.
    busy_count: int = 0
    message_id: str = field(default="", compare=False)

    def to_fields(self) -> dict[str, str]:
        """Stream-entry fields for XADD; optional fields only when set."""
        encoded: dict[str, str] = {}
        for name in ENTRY_FIELDS:
            value = getattr(self, name)
            if name == "metadata":
                value = json.dumps(dict(value), separators=(",", ":"))
            elif name in _OPTIONAL and not value:
                continue
            encoded[name] = str(value)
        return encoded

    def retried(self, retry_count: int) -> Task:
        """The same task with a new retry count, to be added again."""
        return replace(self, retry_count=retry_count)

    def deferred_busy(self) -> Task:
        """The same task with one more busy deferral counted, to be added again."""
        return replace(self, busy_count=self.busy_count + 1)

    def as_handler_payload(self) -> dict[str, Any]:
        """The mapping a task handler is called with: every field but the optional ones, plus
        message_id."""
        payload = {name: getattr(self, name) for name in PAYLOAD_FIELDS}
        payload["metadata"] = dict(self.metadata)
        payload["message_id"] = self.message_id
        return payload


ENTRY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Task) if f.name != "message_id")
PAYLOAD_FIELDS: tuple[str, ...] = tuple(name for name in ENTRY_FIELDS if name not in _OPTIONAL)


def task_fields(**values: Any) -> dict[str, str]:
    """Stream-entry fields of a new task, from Task's keyword arguments."""
    return Task(**values).to_fields()


def decode_task(message_id: str, entry: Mapping[str, str]) -> Task:
    """Decode a task entry, raising MalformedTask with the reason."""
    # One check of everything joined first: a worker decodes every task it runs.
    if not is_utf8("".join(chain.from_iterable(entry.items()))):
        undecodable = [name for name, value in entry.items() if not is_utf8(name + value)]
        raise MalformedTask(f"{len(undecodable)} field(s) are not UTF-8")
    missing = [name for name in _REQUIRED if not entry.get(name)]
    if missing:
        raise MalformedTask(f"missing field(s): {', '.join(missing)}")
    try:
        metadata = json.loads(entry.get("metadata") or "{}")
    except (ValueError, RecursionError) as error:
        raise MalformedTask(f"metadata is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise MalformedTask("metadata is not a JSON object")
    values: dict[str, Any] = {name: entry.get(name, "") for name in ENTRY_FIELDS}
    values.update({name: _count(entry, name) for name in _COUNTS})
    values.update(metadata=metadata, message_id=message_id)
    if values["traceparent"]:
        values["traceparent"] = normalized_traceparent(values["traceparent"])
    return Task(**values)


def _count(entry: Mapping[str, str], name: str) -> int:
    """A non-negative count field; missing or empty is 0."""
    try:
        count = int(entry.get(name) or 0)
    except ValueError:
        raise MalformedTask(f"{name} is not an integer") from None
    if count < 0:
        raise MalformedTask(f"{name} is negative")
    return count
