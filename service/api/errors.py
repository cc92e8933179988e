"""Mapping domain and Redis failures to clear HTTP errors instead of 500s."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.streamids import InvalidStreamId

log = logging.getLogger(__name__)


async def _invalid_stream_id(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=400)


async def _redis_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("%s %s: redis error: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": f"redis unavailable: {error}"}, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InvalidStreamId, _invalid_stream_id)
    app.add_exception_handler(RedisError, _redis_unavailable)
