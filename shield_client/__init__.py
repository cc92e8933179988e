"""The original design's Python API, on this project's protocol.

``RedisStreamsClient`` keeps the original method names (add_task, read_tasks, ack_task,
get_queue_depth, emit_event, read_events, ack_event, check_redis_health) and their meanings,
with this project's guarantees underneath: admission against the backlog cap, ownership-
checked acks, lease renewal while a task is held, and the same Lua scripts as the service
(service/tasks/lua), loaded from the one place they live. ``Worker`` runs an external
consumer of the task group with the service worker's own loop: concurrency, backoff, dead
letters and reclaim.
"""

from shield_client.client import RedisStreamsClient
from shield_client.errors import ClientError, ServiceGroup
from shield_client.external_worker import Worker

__all__ = ["ClientError", "RedisStreamsClient", "ServiceGroup", "Worker"]
