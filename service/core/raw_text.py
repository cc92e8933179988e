"""Text read from Redis that may not be UTF-8.

Every client decodes with ``surrogateescape`` (see service.redisclient), so a reply never
raises: a byte that is not UTF-8 becomes a lone surrogate, and encoding the text the same way
gives the original bytes back. These helpers tell such text apart and keep its bytes.
"""

from __future__ import annotations

import base64

REDIS_ENCODING_ERRORS = "surrogateescape"


def is_utf8(text: str) -> bool:
    """True when the text came from valid UTF-8 (holds no escaped byte or lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def original_bytes(text: str) -> bytes:
    """The bytes Redis held for a value decoded with surrogateescape."""
    return text.encode("utf-8", REDIS_ENCODING_ERRORS)


def base64_of(text: str) -> str:
    """The original bytes as base64, for keeping a value that is not UTF-8 in JSON."""
    return base64.b64encode(original_bytes(text)).decode("ascii")
