"""The Idempotency-Key header of POST /tasks, /jobs and /events, and the answers it shapes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header
from pydantic import BaseModel
from starlette.responses import JSONResponse

from service.core.idempotency import REPLAYED_HEADER, IdempotentWrite

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="1 to 200 printable ASCII characters; a repeat with the same body within "
        "SHIELD_IDEMPOTENCY_TTL_S gets the first answer and writes nothing",
    ),
]


def idempotent_write(route: str, key: str | None, body: BaseModel) -> IdempotentWrite | None:
    """The write's record and fingerprint, or None without a key; 400 for a bad key."""
    if key is None:
        return None
    return IdempotentWrite.of(route, key, body.model_dump(mode="json"))


def created(body: BaseModel | dict[str, Any], replayed: bool) -> JSONResponse:
    """201 with the body; a replay says so in Idempotent-Replayed."""
    content = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return JSONResponse(content, status_code=201, headers=headers)
