"""Prometheus instruments of one process, in a registry of their own rather than the global one.

Names follow the Prometheus conventions: what only grows is a counter named ``*_total``,
what goes up and down is a gauge, and units end the name (``_seconds``, ``_bytes``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from service.core.json_safety import printable

log = logging.getLogger(__name__)

WORKER_COUNTER_NAMES = ("acked", "retried", "dead_lettered")


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
