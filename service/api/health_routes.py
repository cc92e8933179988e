"""Liveness and readiness: /health never touches Redis, /health/detailed does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.api.app_state import State
from service.core.consumer_groups import expected_groups
from service.core.stream_probe import ping_ms, read_stream_infos
from service.core.stream_stats import fold_health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("")
async def liveness() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/detailed", response_model=None)
async def readiness(state: State) -> dict[str, Any] | JSONResponse:
    """Redis reachable, both streams and every expected group present, fan-out running."""
    expected = expected_groups(state.settings)
    try:
        latency_ms = await ping_ms(state.redis)
        infos = await read_stream_infos(state.redis, list(expected))
    except RedisError as error:
        return JSONResponse({"status": "down", "error": str(error)}, status_code=503)
    state.metrics.redis_latency.observe(latency_ms / 1000)
    return fold_health(infos, expected, latency_ms, fanout_running=state.hub.reader_running)
