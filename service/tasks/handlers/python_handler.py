"""``python:<module>:<callable>``: your own function, shipped with the deployment.

Sync functions run in the worker's thread pool, so a slow one holds one slot, not the loop;
coroutine functions run on the loop. A callable that takes a second parameter gets the
attempt's HandlerContext. A sync function runs in a copy of the caller's context, as a
coroutine does, so the attempt's span is current in both (OpenTelemetry keeps it there).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from service.tasks.handlers.context import HandlerContext


class HandlerImportError(Exception):
    """The handler named by the setting cannot be imported or is not callable."""


def import_callable(target: str) -> Callable[..., Any]:
    """Import ``module:callable``, raising HandlerImportError with the reason."""
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise HandlerImportError(f"cannot import {module_name!r}: {error}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise HandlerImportError(f"{target!r} is not a callable")
    return function  # type: ignore[no-any-return]


def _takes_context(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        parameter
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    variadic = any(parameter.kind is parameter.VAR_POSITIONAL for parameter in parameters)
    return len(positional) >= 2 or variadic


class PythonHandler:
    """Calls a Python function with the task's payload (and the context, if it takes one)."""

    def __init__(self, function: Callable[..., Any], executor: Executor) -> None:
        self._function = function
        self._executor = executor
        self._with_context = _takes_context(function)
        self._is_coroutine = inspect.iscoroutinefunction(function)
        self.interruptible = self._is_coroutine

    async def __call__(self, payload: Mapping[str, Any], context: HandlerContext) -> None:
        args: tuple[Any, ...] = (payload, context) if self._with_context else (payload,)
        if self._is_coroutine:
            await self._function(*args)
            return
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._executor,
            functools.partial(contextvars.copy_context().run, self._function, *args),
        )
        # A sync callable may still hand back an awaitable (a functools.partial of a
        # coroutine function, say): finish it on the loop.
        if inspect.isawaitable(result):
            await result

    async def aclose(self) -> None:
        """Nothing to close: the executor belongs to the worker."""
