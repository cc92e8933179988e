"""One OpenTelemetry span per attempt at a task, in the trace the task's traceparent names.

The span is a CONSUMER span named ``process <task stream>``, the child of the traceparent the
task was submitted with (a root when it came without one), and current while the handler
runs, so the handler's own spans are its children and the http and lightrag handlers forward
its traceparent. Attributes: ``shield.job_id``, ``shield.chunk_id``, ``shield.attempt`` (1 for
the first counted attempt; a busy retry does not count), ``shield.outcome`` (done,
retry_later, failed, refused, cancelled), and the messaging ones (destination, consumer
group, message id). A failed or refused attempt has status ERROR with the reason.

The provider is made once per worker: a BatchSpanProcessor, which exports from a thread of
its own, over OTLP/HTTP with protobuf. The exporter and the processor read the standard
OTEL_* variables (endpoint, headers, timeout, batch sizes); OTEL_SERVICE_NAME names the
service, shield-orchestrator-worker by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.util.types import AttributeValue

from service.core.settings import Settings
from service.core.trace_context import parse_traceparent
from service.tasks.handlers.http_semantics import FailedAttempt
from service.tasks.handlers.outcomes import HandlerSignal, PermanentFailure, RetryLater
from service.tasks.task_format import Task

DEFAULT_SERVICE_NAME = "shield-orchestrator-worker"
INSTRUMENTATION_NAME = "shield-orchestrator"


def parent_context(traceparent: str) -> otel_context.Context:
    """The context whose current span is the remote caller's; empty (a new trace) for none."""
    parsed = parse_traceparent(traceparent) if traceparent else None
    if parsed is None:
        return otel_context.Context()
    remote = SpanContext(
        trace_id=int(parsed.trace_id, 16),
        span_id=int(parsed.parent_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(parsed.flags, 16)),
    )
    return trace.set_span_in_context(NonRecordingSpan(remote), otel_context.Context())


def traceparent_of(span_context: SpanContext) -> str:
    """A span's traceparent header value (version 00)."""
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{int(span_context.trace_flags):02x}"
    )


def _outcome(error: BaseException | None) -> tuple[str, str | None]:
    """The attempt's outcome attribute, and the error status's description if it failed."""
    if error is None:
        return "done", None
    if isinstance(error, RetryLater):
        return "retry_later", None
    if isinstance(error, PermanentFailure):
        return "refused", error.reason
    if not isinstance(error, Exception):
        return "cancelled", type(error).__name__
    if isinstance(error, FailedAttempt | HandlerSignal):
        return "failed", str(error)
    return "failed", f"{type(error).__name__}: {error}"


class _AttemptSpan:
    """The span of one attempt, current from enter to exit."""

    __slots__ = ("_attributes", "_name", "_parent", "_span", "_token", "_tracer")

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        parent: otel_context.Context,
        attributes: dict[str, AttributeValue],
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._parent = parent
        self._attributes = attributes
        self._span: trace.Span | None = None
        self._token: object = None

    def __enter__(self) -> str:
        span = self._tracer.start_span(
            self._name,
            context=self._parent,
            kind=SpanKind.CONSUMER,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span, self._parent))
        return traceparent_of(span.get_span_context())

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]
        span = self._span
        if span is None:
            return
        outcome, failure = _outcome(error)
        span.set_attribute("shield.outcome", outcome)
        if failure is not None:
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end()


class AttemptSpans:
    """Opens a span per attempt with one tracer; the provider behind it is the worker's."""

    def __init__(
        self, tracer: Tracer, settings: Settings, shutdown: Callable[[], object] = lambda: None
    ) -> None:
        self._tracer = tracer
        self._stream = settings.stream_ingestion
        self._group = settings.worker_group
        self._span_name = f"process {settings.stream_ingestion}"
        self._shutdown = shutdown
        # The chunks of one job come in runs under one traceparent: its parent is made once.
        self._last_parent = ("", otel_context.Context())

    def attempt(self, task: Task) -> _AttemptSpan:
        attributes: dict[str, AttributeValue] = {
            "messaging.operation.type": "process",
            "messaging.destination.name": self._stream,
            "messaging.consumer.group.name": self._group,
            "messaging.message.id": task.message_id,
            "shield.job_id": task.job_id,
            "shield.chunk_id": task.chunk_id,
            "shield.attempt": task.retry_count + 1,
        }
        return _AttemptSpan(
            self._tracer, self._span_name, self._parent(task.traceparent), attributes
        )

    def _parent(self, traceparent: str) -> otel_context.Context:
        last_traceparent, parent = self._last_parent
        if traceparent != last_traceparent:
            parent = parent_context(traceparent)
            self._last_parent = (traceparent, parent)
        return parent

    def shutdown(self) -> None:
        self._shutdown()


def otlp_attempt_spans(settings: Settings, environ: Mapping[str, str]) -> AttemptSpans:
    """The worker's provider, exporting over OTLP/HTTP, and the spans it records.

    It is also made the global provider (unless one was set before), so a Python handler's
    own ``trace.get_tracer(...)`` spans go the same way.
    """
    named = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return AttemptSpans(provider.get_tracer(INSTRUMENTATION_NAME), settings, provider.shutdown)
