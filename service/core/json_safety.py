"""JSON that every parser accepts: no NaN or Infinity, no lone surrogate, bounded nesting.

Python's json module reads and writes all three, but a browser's JSON.parse rejects NaN and
Infinity, UTF-8 cannot carry a lone surrogate (so writing it to Redis or to a client raises),
and nesting near the interpreter's recursion limit makes the next json.loads or json.dumps
raise RecursionError. Request bodies are checked once on the way in, with JsonSafeModel, so
whatever is accepted can be stored and served again; text read back from Redis, which anyone
can write, is shown with printable().
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, model_validator

from service.core.raw_text import is_utf8, original_bytes

# Deep enough for any real payload, far below the depth where json raises RecursionError.
MAX_JSON_DEPTH = 32


def json_safety_problem(value: object, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a parsed JSON value could not be stored and served as JSON, or None when it can."""
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                return f"nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key in item:
                    if isinstance(key, str) and not is_utf8(key):
                        return "a key holds a lone surrogate, which is not Unicode text"
                children = list(item.values())
            else:
                children = item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            if not is_utf8(item):
                return "a string holds a lone surrogate, which is not Unicode text"
        elif isinstance(item, float) and not math.isfinite(item):
            return "NaN and Infinity are not JSON numbers"
    return None


class JsonSafeModel(BaseModel):
    """A request body whose every value, at any depth, passes json_safety_problem."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsafe_json(cls, data: Any) -> Any:
        problem = json_safety_problem(data)
        if problem is not None:
            raise ValueError(problem)
        return data


def dumps(value: object) -> str:
    """Compact JSON that raises (ValueError) rather than emit NaN or Infinity."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def printable(text: str) -> str:
    """Text from Redis made safe to serve: bytes that are not UTF-8 shown as ``\\xNN``."""
    if is_utf8(text):
        return text
    try:
        return original_bytes(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        # A surrogate that did not come from a raw byte (written as a JSON escape, say).
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
