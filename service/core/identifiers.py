"""Ids a client names (job_id, chunk_id, runId): printable text only.

Ids reach log lines, and a CR or LF in one forges a line; a bidi override hides what follows.
So every id refuses what ``str.isprintable`` refuses: control, format and separator characters
other than the plain space.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


def check_printable(value: str) -> str:
    """The value, or ValueError when it holds control characters."""
    if not value.isprintable():
        raise ValueError("must not hold control characters")
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(check_printable)]
# An event's job_id may be empty: the event belongs to no job.
MaybeEmptyIdentifier = Annotated[str, Field(max_length=256), AfterValidator(check_printable)]
