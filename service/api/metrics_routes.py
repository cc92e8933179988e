"""Prometheus exposition of this process's instruments, the workers' shared totals, and what
the metrics-collector group's readers recorded (task latency, job durations, events by type)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from service.api.app_state import State
from service.core.names import EVENT_TYPES_KEY, JOB_DURATION_KEY, TASK_LATENCY_KEY
from service.core.redis_replies import fields

COLLECTED_KEYS = (TASK_LATENCY_KEY, JOB_DURATION_KEY, EVENT_TYPES_KEY)

log = logging.getLogger(__name__)
router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """Prometheus text format."""
    try:
        async with state.redis.pipeline(transaction=False) as pipeline:
            pipeline.hgetall(state.settings.worker_counters_key)
            for key in COLLECTED_KEYS:
                pipeline.hgetall(key)
            totals, latency, jobs, types = await pipeline.execute()
    except RedisError as error:
        # The process's own metrics are still worth serving; the shared ones keep their last
        # values.
        log.warning("metrics: cannot read the shared totals: %s", error)
    else:
        state.metrics.set_worker_totals(fields(totals))
        state.metrics.collected.update(fields(latency), fields(jobs), fields(types))
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
