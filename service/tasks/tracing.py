"""Whether a worker traces its attempts, decided once at its start from the OTEL_* variables.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and off
when OTEL_SDK_DISABLED is true. Off costs nothing: no OpenTelemetry module is imported, no
provider is made, and an attempt gets one small object that hands the handler the task's own
traceparent, which it forwards as it came (a hop that does not trace keeps the caller's
trace whole). On, attempt_spans opens one span per attempt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

from service.core.settings import Settings
from service.tasks.task_format import Task

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
DISABLED_VARIABLE = "OTEL_SDK_DISABLED"


class AttemptTracing(Protocol):
    """What the processor wraps each handler call in."""

    def attempt(self, task: Task) -> AbstractContextManager[str]:
        """Around one attempt; gives the traceparent the handler forwards ("" for none)."""
        ...

    def shutdown(self) -> None:
        """Export what is left; the worker calls it once, as it exits."""
        ...


class _Forwarded:
    """An untraced attempt: the task's own traceparent, and nothing else."""

    __slots__ = ("_traceparent",)

    def __init__(self, traceparent: str) -> None:
        self._traceparent = traceparent

    def __enter__(self) -> str:
        return self._traceparent

    def __exit__(self, *exc_info: object) -> None:
        return None


class Untraced:
    """Tracing off: no spans, the task's traceparent forwarded unchanged."""

    def attempt(self, task: Task) -> _Forwarded:
        return _Forwarded(task.traceparent)

    def shutdown(self) -> None:
        """Nothing to export."""


UNTRACED = Untraced()


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    """True when an OTLP endpoint is set and the SDK is not disabled."""
    if environ.get(DISABLED_VARIABLE, "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def tracing_from_env(settings: Settings, environ: Mapping[str, str] = os.environ) -> AttemptTracing:
    """Spans exported over OTLP when the environment asks for them, else UNTRACED."""
    if not tracing_enabled(environ):
        return UNTRACED
    # Imported only here, so a worker that does not trace never loads the SDK.
    from service.tasks.attempt_spans import otlp_attempt_spans

    return otlp_attempt_spans(settings, environ)
