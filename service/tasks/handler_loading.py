"""Task handlers: the default one, and loading the one named by SHIELD_TASK_HANDLER."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from service.core.handler_spec import LOG_AND_ACK, HandlerKind, parse_handler_spec
from service.core.settings import ConfigError
from service.tasks.processor import TaskHandler

log = logging.getLogger(__name__)


def log_task(task: Mapping[str, Any]) -> None:
    """The default handler: real document processing is out of scope, so it only logs."""
    log.info("task %s job=%s chunk=%s", task["message_id"], task["job_id"], task["chunk_id"])


def load_handler(spec: str) -> TaskHandler:
    """Import ``module:function``; an empty spec gives the default handler."""
    if not spec or spec == LOG_AND_ACK:
        return log_task
    parsed = parse_handler_spec(spec)
    if parsed.kind is not HandlerKind.PYTHON:
        raise ConfigError(f"SHIELD_TASK_HANDLER: {parsed.kind} handlers are not built yet")
    module_name, _, function_name = parsed.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"SHIELD_TASK_HANDLER: cannot import {module_name!r}: {error}") from None
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise ConfigError(f"SHIELD_TASK_HANDLER: {spec!r} is not a callable")
    return handler  # type: ignore[no-any-return]
