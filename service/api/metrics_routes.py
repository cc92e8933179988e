"""Prometheus exposition of this process's instruments and the workers' shared totals."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from service.api.app_state import State
from service.core.redis_replies import fields

log = logging.getLogger(__name__)
router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """Prometheus text format."""
    try:
        totals = await state.redis.hgetall(state.settings.worker_counters_key)
    except RedisError as error:
        # The process's own metrics are still worth serving; the task totals keep their last value.
        log.warning("metrics: cannot read worker totals: %s", error)
    else:
        state.metrics.set_worker_totals(fields(totals))
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
