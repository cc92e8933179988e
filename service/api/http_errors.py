"""Mapping domain and Redis failures to clear HTTP errors instead of 500s."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.core.json_safety import printable
from service.events.stream_ids import InvalidStreamId

log = logging.getLogger(__name__)


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


async def _invalid_stream_id(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=400)


async def _redis_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("%s %s: redis error: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": f"redis unavailable: {printable(str(error))}"}, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(InvalidStreamId, _invalid_stream_id)
    app.add_exception_handler(RedisError, _redis_unavailable)
