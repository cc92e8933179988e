"""Stream names, consumer groups and key names, kept from the original Ansible design."""

from __future__ import annotations

INGESTION_STREAM = "shield:ingestion_queue"
EVENTS_STREAM = "shield:events"
DEAD_LETTER_SUFFIX = ":dlq"

WORKER_GROUP = "lightrag-workers"
METRICS_GROUP = "metrics-collector"
AGUI_FRONTEND_GROUP = "ag-ui-frontend"
DASHBOARD_FRONTEND_GROUP = "dashboard-frontend"
INGESTION_GROUPS: tuple[str, ...] = (WORKER_GROUP, METRICS_GROUP)
EVENT_GROUPS: tuple[str, ...] = (
    AGUI_FRONTEND_GROUP,
    "power-ui-frontend",
    DASHBOARD_FRONTEND_GROUP,
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


# Tasks waiting for their retry: a sorted set of member ids by due time (ms), and a hash of
# each member's task fields (JSON). Held here, not pending under a worker, so no reclaim takes
# them early, and they survive every worker's death.
DELAYED_SUFFIX = ":delayed"
DELAYED_TASKS_SUFFIX = ":delayed:tasks"
# The token bucket that caps handler calls across every worker (SHIELD_HANDLER_RATE_PER_S).
HANDLER_RATE_SUFFIX = ":handler-rate"
# Dead-letter metadata is stored beside the task's own fields under this prefix; the Lua
# scripts get it as an argument.
DLQ_FIELD_PREFIX = "dlq_"


def delayed_key(ingestion_stream: str) -> str:
    """Name of the sorted set of tasks waiting for a retry, scored by due time in ms."""
    return ingestion_stream + DELAYED_SUFFIX


def delayed_tasks_key(ingestion_stream: str) -> str:
    """Name of the hash holding the fields of each task waiting for a retry."""
    return ingestion_stream + DELAYED_TASKS_SUFFIX


# Jobs: each job's hash and its chunks' hash under one prefix, an index of jobs by creation
# time (ms), and the set of jobs being cancelled, which workers watch.
JOB_PREFIX_SUFFIX = ":jobs:"
JOB_INDEX_SUFFIX = ":jobs"
CANCELLING_JOBS_SUFFIX = ":jobs-cancelling"
# Idempotency records of POST /tasks, /jobs and /events, by route and the client's key.
IDEMPOTENCY_PREFIX = "shield:idempotency:"


def job_key_prefix(ingestion_stream: str) -> str:
    """Prefix of the keys that hold jobs: <prefix>job:<id> and <prefix>chunks:<id>."""
    return ingestion_stream + JOB_PREFIX_SUFFIX


def job_index_key(ingestion_stream: str) -> str:
    """Name of the sorted set of job ids scored by creation time in ms."""
    return ingestion_stream + JOB_INDEX_SUFFIX


def cancelling_jobs_key(ingestion_stream: str) -> str:
    """Name of the set of jobs being cancelled, whose running chunks workers stop."""
    return ingestion_stream + CANCELLING_JOBS_SUFFIX


def handler_rate_key(ingestion_stream: str) -> str:
    """Name of the hash holding the handler rate limit's token bucket."""
    return ingestion_stream + HANDLER_RATE_SUFFIX


# What the metrics-collector group's reader keeps, shared by every API process: histograms
# as hashes of bucket upper bounds (plus "sum" and "count"), counts by event type, and the
# jobs still open (tasks seen queued and settled, and when the first was queued).
COLLECTED_PREFIX = "shield:collected:"
TASK_LATENCY_KEY = COLLECTED_PREFIX + "task-latency-seconds"
JOB_DURATION_KEY = COLLECTED_PREFIX + "job-duration-seconds"
EVENT_TYPES_KEY = COLLECTED_PREFIX + "events-by-type"
OPEN_JOBS_QUEUED_KEY = COLLECTED_PREFIX + "open-jobs:queued"
OPEN_JOBS_SETTLED_KEY = COLLECTED_PREFIX + "open-jobs:settled"
OPEN_JOBS_FIRST_MS_KEY = COLLECTED_PREFIX + "open-jobs:first-ms"


# Set by the deployment (infra) on first contact; a Redis that lost its data gets a new one.
HOST_TOKEN_KEY = "shield:deploy:host-token"
