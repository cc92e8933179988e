"""Stream names, consumer groups and key names, kept from the original Ansible design."""

from __future__ import annotations

INGESTION_STREAM = "shield:ingestion_queue"
EVENTS_STREAM = "shield:events"
DEAD_LETTER_SUFFIX = ":dlq"

WORKER_GROUP = "lightrag-workers"
METRICS_GROUP = "metrics-collector"
INGESTION_GROUPS: tuple[str, ...] = (WORKER_GROUP, METRICS_GROUP)
EVENT_GROUPS: tuple[str, ...] = (
    "ag-ui-frontend",
    "power-ui-frontend",
    "dashboard-frontend",
    METRICS_GROUP,
)

# The master name Sentinel knows the Redis primary by.
SENTINEL_MASTER = "shield"

# Counters that every worker process adds to, so /metrics shows totals across processes.
WORKER_COUNTERS_SUFFIX = ":counters"


def dead_letter_stream(ingestion_stream: str) -> str:
    """Name of the dead-letter stream that belongs to a task stream."""
    return ingestion_stream + DEAD_LETTER_SUFFIX


def worker_counters_key(ingestion_stream: str) -> str:
    """Name of the hash where workers count acked, retried and dead-lettered tasks."""
    return ingestion_stream + WORKER_COUNTERS_SUFFIX


# Set by the deployment (infra) on first contact; a Redis that lost its data gets a new one.
HOST_TOKEN_KEY = "shield:deploy:host-token"
