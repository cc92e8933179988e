"""Polling until something holds: the one wait primitive every suite builds on.

Specific waits (a port answering PING, an API serving, a page's script, a lab condition) are
thin wrappers that give it a predicate and say what they await, so a timeout names it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float = 10.0,
    *,
    interval_s: float = 0.05,
    describe: str | Callable[[], str] | None = None,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """Call predicate until it returns something truthy, and return that.

    An exception of a type in `ignoring` counts as "not yet"; any other propagates, so a
    predicate can stop the wait early (a process that died). On a timeout the TimeoutError
    says what was awaited: `describe` (a callable is asked then, to report the last state),
    else the predicate's name or a lambda's source line; it is chained to the last ignored
    exception.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
        except ignoring as error:
            last_error = error
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout_s:g} s waiting for {_what(predicate, describe)}"
            ) from last_error
        time.sleep(interval_s)


def _what(predicate: Callable[[], object], describe: str | Callable[[], str] | None) -> str:
    if callable(describe):
        return describe()
    if describe:
        return describe
    name = getattr(predicate, "__qualname__", repr(predicate))
    if "<lambda>" not in name:
        return name
    # A lambda's own source line says best what it awaited.
    try:
        source = " ".join(inspect.getsource(predicate).split())
    except (OSError, TypeError):
        return "a condition"
    return source if len(source) <= 200 else source[:197] + "..."
