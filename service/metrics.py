"""Prometheus instruments of one process, in a registry of their own rather than the global one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

WORKER_COUNTER_NAMES = ("acked", "retried", "dead_lettered")


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
        self.connected_clients = Gauge(
            "shield_connected_clients",
            "Live clients connected to this process",
            ["transport"],
            registry=self.registry,
        )
        self.tasks = Gauge(
            "shield_tasks",
            "Tasks handled by all workers, by outcome (a running total kept in Redis)",
            ["outcome"],
            registry=self.registry,
        )
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
        for transport in ("sse", "ws"):
            self.events_delivered.labels(transport)
            self.connected_clients.labels(transport)

    def set_worker_totals(self, totals: Mapping[str, str]) -> None:
        """Copy the workers' shared counters, as read from their Redis hash."""
        for name in WORKER_COUNTER_NAMES:
            self.tasks.labels(name).set(float(totals.get(name, 0)))

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)


def _running_task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return 0.0
