"""Narrowing redis-py replies to the shapes a client with decode_responses=True returns.

redis-py types replies for every client configuration at once (bytes or str, RESP2 or RESP3);
these helpers state once what ours returns, so the rest of the code is typed plainly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from redis.typing import EncodableT, FieldT

Fields = dict[str, str]
Entry = tuple[str, Fields]


def entries(reply: Any) -> list[Entry]:
    """An XRANGE-style list of (id, fields), dropping entries deleted under a pending id."""
    return [
        (cast(str, entry_id), cast(Fields, fields))
        for entry_id, fields in reply or []
        if fields is not None
    ]


def first_stream_entries(reply: Any) -> list[Entry]:
    """The entries of the only stream in an XREAD or XREADGROUP reply."""
    if not reply:
        return []
    return entries(reply[0][1])


def xadd_fields(mapping: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    """Fields in the type XADD is declared to take."""
    converted: dict[FieldT, EncodableT] = {}
    converted.update(mapping)
    return converted


def fields(reply: Any) -> Fields:
    return cast(Fields, reply or {})
