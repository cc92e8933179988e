"""One mapping from domain errors to HTTP answers, registered once on the app.

Routes raise the domain's own errors and never build these answers themselves. A refusal a
client should retry (a full backlog, a replica that did not confirm, a run being set up, Redis
away) is a 503 with ``Retry-After``; bad input is a 400 or 422; a conflict is a 409; a token
that does not cover the job or event type asked for is a 403.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import OutOfMemoryError, RedisError

from service.agui.run_plan import IngestRefused
from service.agui.run_store import RunConflict
from service.core.grants import AccessDenied
from service.core.idempotency import IdempotencyKeyReused, InvalidIdempotencyKey
from service.core.json_safety import printable
from service.core.tokens import MintRefused
from service.events.filters import TooManyPatterns
from service.events.frontend_groups import UnknownApplication
from service.events.stream_ids import InvalidStreamId
from service.jobs.errors import InvalidJobId, JobConflict, JobNotFound, TooManyChunks
from service.tasks.task_queue import NotReplicated, QueueFull

log = logging.getLogger(__name__)

# How long a refused client waits: the backlog drains in batches.
BACKLOG_RETRY_AFTER_S = 2
# A Redis at its maxmemory (noeviction) frees room only as workers settle tasks and streams
# are trimmed: a few seconds.
REDIS_FULL_RETRY_AFTER_S = 5
REDIS_FULL_DETAIL = (
    "redis is full (its maxmemory, with noeviction): nothing was written; retry later"
)

# Domain error → (status, Retry-After seconds or None). The message is the error's own.
DOMAIN_ANSWERS: dict[type[Exception], tuple[int, int | None]] = {
    QueueFull: (503, BACKLOG_RETRY_AFTER_S),
    NotReplicated: (503, BACKLOG_RETRY_AFTER_S),
    RunConflict: (409, None),
    IngestRefused: (422, None),
    InvalidStreamId: (400, None),
    UnknownApplication: (400, None),
    TooManyPatterns: (400, None),
    AccessDenied: (403, None),
    MintRefused: (422, None),
    InvalidJobId: (400, None),
    JobNotFound: (404, None),
    JobConflict: (409, None),
    TooManyChunks: (413, None),
    InvalidIdempotencyKey: (400, None),
    IdempotencyKeyReused: (422, None),
}


def _validation_detail(error: dict[str, Any]) -> dict[str, Any]:
    # FastAPI's own handler echoes the offending input, which may be exactly what cannot be
    # written out again (NaN, a lone surrogate, nesting past the recursion limit): a 422
    # turned into a 500. Type, place and message say enough.
    return {
        "type": printable(str(error.get("type", ""))),
        "loc": [part if isinstance(part, int) else printable(str(part)) for part in error["loc"]],
        "msg": printable(str(error.get("msg", ""))),
    }


async def _invalid_body(request: Request, error: Exception) -> JSONResponse:
    errors = error.errors() if isinstance(error, RequestValidationError) else []
    return JSONResponse({"detail": [_validation_detail(item) for item in errors]}, status_code=422)


def domain_answer(error: Exception) -> JSONResponse:
    """The answer to a domain error, for routes that must build it themselves (a WebSocket
    handshake, which no exception handler sees)."""
    status, retry_after_s = next(
        answer for kind, answer in DOMAIN_ANSWERS.items() if isinstance(error, kind)
    )
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)


async def _domain_answer(request: Request, error: Exception) -> JSONResponse:
    return domain_answer(error)


def _is_out_of_memory(error: Exception) -> bool:
    """Redis refused a write for memory: OOM as the reply, or from a script's write."""
    return isinstance(error, OutOfMemoryError) or "OOM command not allowed" in str(error)


async def _redis_unavailable(request: Request, error: Exception) -> JSONResponse:
    if _is_out_of_memory(error):
        log.warning("%s %s: redis is full: %s", request.method, request.url.path, error)
        return JSONResponse(
            {"detail": REDIS_FULL_DETAIL},
            status_code=503,
            headers={"Retry-After": str(REDIS_FULL_RETRY_AFTER_S)},
        )
    log.warning("%s %s: redis error: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": f"redis unavailable: {printable(str(error))}"}, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_body)
    for kind in DOMAIN_ANSWERS:
        app.add_exception_handler(kind, _domain_answer)
    app.add_exception_handler(RedisError, _redis_unavailable)
