"""Liveness and readiness: /health never touches Redis, /health/detailed does.

/health/detailed answers anyone with the status (up, degraded or down) and its status code;
the details (Redis's error, which names its address, stream and group names, latency) go only
to a caller with a token not limited to some jobs or types.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.api.app_state import State
from service.api.auth import OptionalGrant
from service.core.consumer_groups import expected_groups
from service.core.stream_probe import ping_ms, read_stream_infos
from service.core.stream_stats import fold_health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("")
async def liveness() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/detailed", response_model=None)
async def readiness(state: State, grant: OptionalGrant) -> dict[str, Any] | JSONResponse:
    """Redis reachable, both streams and every expected group present, fan-out running."""
    detailed = grant is not None and not grant.limited
    expected = expected_groups(state.settings)
    try:
        latency_ms = await ping_ms(state.redis)
        infos = await read_stream_infos(state.redis, list(expected))
    except RedisError as error:
        down: dict[str, Any] = {"status": "down"}
        if detailed:
            down["error"] = str(error)
        return JSONResponse(down, status_code=503)
    state.metrics.redis_latency.observe(latency_ms / 1000)
    health = fold_health(infos, expected, latency_ms, fanout_running=state.hub.reader_running)
    return health if detailed else {"status": health["status"]}
