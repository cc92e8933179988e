"""Idempotent writes (``Idempotency-Key``): the client's key, the request's fingerprint, and
the record of the first answer, kept by the same Lua script as the write (lua/idempotency.lua).

A write recorded is a write made: its answer is 201 with what it wrote. A 503 from the replica
check (WAIT) came after the write, so a retry with the same key gets that write's 201 (after
its own replica check), never a second write.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from service.core import names
from service.core.lua import Prelude

IDEMPOTENCY_PRELUDE: Prelude = ("service.core", "idempotency")
MAX_KEY_CHARS = 200
REPLAYED_HEADER = "Idempotent-Replayed"
# Script replies beside the write's own: the same request again, or another under that key.
REPLAYED = 3
KEY_REUSED = 4


class IdempotencyError(Exception):
    """Root of the idempotency errors."""


class InvalidIdempotencyKey(IdempotencyError):
    """A key that is empty, too long, or not printable ASCII (400)."""


class IdempotencyKeyReused(IdempotencyError):
    """The key was used before with another request body (422)."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request body")


def check_key(key: str) -> str:
    """The key, or InvalidIdempotencyKey: 1 to 200 printable ASCII characters."""
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= char <= "~" for char in key):
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters"
        )
    return key


@dataclass(frozen=True, slots=True)
class IdempotentWrite:
    """One request under a client's key: where its record lives and its body's fingerprint."""

    record_key: str
    request_hash: str

    @classmethod
    def of(cls, route: str, key: str, body: Any) -> IdempotentWrite:
        """For `route` (e.g. ``POST /tasks``) and the parsed body; the key checked first."""
        digest = hashlib.sha256(check_key(key).encode("ascii")).hexdigest()
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        request = hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()
        return cls(f"{names.IDEMPOTENCY_PREFIX}{route.replace(' ', ':')}:{digest}", request)


def script_args(write: IdempotentWrite | None) -> tuple[str, str]:
    """(record key, request hash) for a script; an empty hash means no key was given."""
    if write is None:
        return names.IDEMPOTENCY_PREFIX + "unused", ""
    return write.record_key, write.request_hash


def replayed_result(reply: list[Any]) -> list[Any] | None:
    """The first write's reply when `reply` is a replay; raises IdempotencyKeyReused for a key
    used with another body; None for a reply of a write made now."""
    if int(reply[0]) == KEY_REUSED:
        raise IdempotencyKeyReused()
    if int(reply[0]) == REPLAYED:
        result: list[Any] = json.loads(reply[1])["result"]
        return result
    return None
