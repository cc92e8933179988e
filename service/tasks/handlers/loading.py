"""Building the handler that SHIELD_TASK_HANDLER names, once, at the worker's start.

There is no default: a worker with no handler refuses to start, because a worker that acks
what nobody processed loses work silently (a LightRAG worker sharing the group would see
part of its chunks marked done).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any, Protocol

import httpx

from service.core.handler_spec import ACCEPTED_FORMS, HandlerKind, parse_handler_spec
from service.core.settings import ConfigError, Settings
from service.tasks.handlers.context import HandlerContext
from service.tasks.handlers.http_handler import HttpHandler
from service.tasks.handlers.lightrag_handler import LightRagHandler
from service.tasks.handlers.python_handler import (
    HandlerImportError,
    PythonHandler,
    import_callable,
)

log = logging.getLogger(__name__)


class Handler(Protocol):
    """What the worker calls for each attempt at a task."""

    # True when cancelling the call stops the work (an async handler, an HTTP call); a sync
    # function in a thread cannot be stopped and is only told, through context.cancelled.
    interruptible: bool

    async def __call__(self, payload: Mapping[str, Any], context: HandlerContext) -> None: ...

    async def aclose(self) -> None: ...


class LogAndAck:
    """``log-and-ack``: logs each task and acks it. For demos and load tests only."""

    interruptible = True

    async def __call__(self, payload: Mapping[str, Any], context: HandlerContext) -> None:
        log.info(
            "log-and-ack: task %s job=%s chunk=%s",
            payload["message_id"],
            payload["job_id"],
            payload["chunk_id"],
        )

    async def aclose(self) -> None:
        """Nothing to close."""


def build_handler(settings: Settings, executor: Executor) -> Handler:
    """The configured handler, or ConfigError naming SHIELD_TASK_HANDLER."""
    if not settings.task_handler.strip():
        raise ConfigError(
            f"SHIELD_TASK_HANDLER is not set; the worker consumes nothing without a handler."
            f" Use {ACCEPTED_FORMS}"
        )
    spec = parse_handler_spec(settings.task_handler)
    token = settings.handler_token.get_secret_value() if settings.handler_token else None
    if spec.kind is HandlerKind.LOG_AND_ACK:
        return LogAndAck()
    if spec.kind is HandlerKind.HTTP:
        return HttpHandler(spec.target, _http_client(settings), token, settings.handler_timeout_s)
    if spec.kind is HandlerKind.LIGHTRAG:
        return LightRagHandler(
            spec.target, _http_client(settings), token, settings.handler_timeout_s
        )
    try:
        return PythonHandler(import_callable(spec.target), executor)
    except HandlerImportError as error:
        raise ConfigError(f"SHIELD_TASK_HANDLER: {error}") from None


def _http_client(settings: Settings) -> httpx.AsyncClient:
    concurrency = settings.worker_concurrency
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.handler_timeout_s),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        # The worker's own environment (HTTP_PROXY and the like) must not reroute a handler.
        trust_env=False,
    )
