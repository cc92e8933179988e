"""Prometheus instruments of one process, in a registry of their own rather than the global one.

Names follow the Prometheus conventions: what only grows is a counter named ``*_total``,
what goes up and down is a gauge, and units end the name (``_seconds``, ``_bytes``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.core.json_safety import printable

log = logging.getLogger(__name__)

# Upper bounds in seconds, as Prometheus buckets; a task of an LLM pipeline takes seconds.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
JOB_BUCKETS_S: tuple[float, ...] = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600)
WORKER_COUNTER_NAMES = ("acked", "retried", "deferred", "dead_lettered")
# At most this many event types are exported: anyone can write a new type.
MAX_EXPORTED_EVENT_TYPES = 200


class WorkerTotals(Collector):
    """``shield_tasks_total{outcome}``: the workers' running totals, kept in a Redis hash.

    A counter, though this process only copies it: the workers add to the hash and never
    reset it. A value that is not a finite number keeps the last good one, so anything
    written into the hash by hand cannot break /metrics.
    """

    def __init__(self) -> None:
        self._totals = dict.fromkeys(WORKER_COUNTER_NAMES, 0.0)

    def update(self, totals: Mapping[str, str]) -> None:
        """Take the hash's values; skip and log those that are not numbers."""
        for name in WORKER_COUNTER_NAMES:
            raw = totals.get(name)
            if raw is None:
                continue
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0:
                log.warning("worker counter %s holds %r, not a count", name, printable(raw))
                continue
            self._totals[name] = value

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "shield_tasks",
            "Tasks handled by all workers, by outcome (a running total kept in Redis)",
            labels=["outcome"],
        )
        for name, value in self._totals.items():
            family.add_metric([name], value)
        yield family


class CollectedMetrics(Collector):
    """What the metrics-collector group's reader keeps in Redis (service.events.collector):
    task latency from enqueue to done, job durations, and events by type, for all processes."""

    def __init__(self) -> None:
        self._latency: Mapping[str, str] = {}
        self._jobs: Mapping[str, str] = {}
        self._types: Mapping[str, str] = {}

    def update(
        self, latency: Mapping[str, str], jobs: Mapping[str, str], types: Mapping[str, str]
    ) -> None:
        self._latency, self._jobs, self._types = latency, jobs, types

    def collect(self) -> Iterable[Metric]:
        for name, documentation, counts, bounds in (
            (
                "shield_task_latency_seconds",
                "Time from a task's enqueue to its completion, seen by the metrics-collector",
                self._latency,
                LATENCY_BUCKETS_S,
            ),
            (
                "shield_job_duration_seconds",
                "Time from a job's first task queued to its last settled",
                self._jobs,
                JOB_BUCKETS_S,
            ),
        ):
            buckets, total, _ = cumulative_buckets(counts, bounds)
            yield HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)
        family = CounterMetricFamily(
            "shield_collected_events",
            "Events on the events stream by type, seen by the metrics-collector",
            labels=["type"],
        )
        for event_type, raw in sorted(self._types.items())[:MAX_EXPORTED_EVENT_TYPES]:
            try:
                family.add_metric([printable(event_type)], max(0.0, float(raw)))
            except ValueError:
                continue
        yield family


class ServiceMetrics:
    """Counters and gauges served on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_published = Counter(
            "shield_events_published",
            "Events written to the events stream",
            registry=self.registry,
        )
        self.events_delivered = Counter(
            "shield_events_delivered",
            "Events sent to live clients",
            ["transport"],
            registry=self.registry,
        )
        self.event_entries_skipped = Counter(
            "shield_event_entries_skipped",
            "Entries of the events stream that could not be served and were skipped",
            registry=self.registry,
        )
        self.fanout_reader_failures = Counter(
            "shield_fanout_reader_failures",
            "Unexpected failures of the fan-out reader, each followed by a restart",
            registry=self.registry,
        )
        self.connected_clients = Gauge(
            "shield_connected_clients",
            "Live clients connected to this process",
            ["transport"],
            registry=self.registry,
        )
        self.worker_totals = WorkerTotals()
        self.registry.register(self.worker_totals)
        self.collected = CollectedMetrics()
        self.registry.register(self.collected)
        self.redis_latency = Histogram(
            "shield_redis_latency_seconds",
            "Round-trip time of Redis commands issued by the API",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        # Leaks show up here first: tasks and memory that do not return after clients leave.
        ProcessCollector(registry=self.registry)
        self.asyncio_tasks = Gauge(
            "shield_asyncio_tasks", "asyncio tasks alive in this process", registry=self.registry
        )
        self.asyncio_tasks.set_function(_running_task_count)
        self.fanout_reader_up = Gauge(
            "shield_fanout_reader_up",
            "1 while the fan-out reader runs, 0 while it waits to restart",
            registry=self.registry,
        )
        for transport in ("sse", "ws"):
            self.events_delivered.labels(transport)
            self.connected_clients.labels(transport)

    def set_worker_totals(self, totals: Mapping[str, str]) -> None:
        """Copy the workers' shared counters, as read from their Redis hash."""
        self.worker_totals.update(totals)

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)


def _running_task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return 0.0


def cumulative_buckets(
    counts: Mapping[str, str], bounds: Sequence[float]
) -> tuple[list[tuple[str, float]], float, float]:
    """A histogram hash into Prometheus's cumulative buckets, its sum and its count."""
    running = 0.0
    buckets: list[tuple[str, float]] = []
    for bound in (*(repr(float(b)) for b in bounds), "+Inf"):
        running += _number(counts.get(bound))
        buckets.append((bound, running))
    return buckets, _number(counts.get("sum")), _number(counts.get("count"))


def _number(raw: str | None) -> float:
    try:
        value = float(raw or 0)
    except ValueError:
        return 0.0
    return value if value == value and value >= 0 else 0.0
