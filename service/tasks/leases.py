"""Keeping a worker's hold on the tasks it is running, from a thread of its own.

A task stays pending for its worker until acked; once it has been idle for claim_idle_ms any
other worker may reclaim it. A batch that runs longer than that must keep renewing its tasks,
or live workers steal each other's work and a task that succeeds is counted as poison.

The renewal runs in a thread with its own event loop and Redis connection: a sync handler
blocks the worker's loop for as long as it runs, and a long task is exactly when renewal
matters. A task held for longer than lease_max_ms is no longer renewed, so a handler that
hangs forever lets another worker take its task.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.core.settings import Settings
from service.tasks.task_queue import TaskQueue

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews this consumer's pending tasks every interval_s until they are released."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], Redis],
        consumer: str,
        interval_s: float,
        lease_max_s: float,
    ) -> None:
        self._settings = settings
        self._client_factory = client_factory
        self._consumer = consumer
        self._interval_s = interval_s
        self._lease_max_s = lease_max_s
        self._lock = threading.Lock()
        self._held: dict[str, float] = {}
        self._lost: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=self._interval_s + 5)

    def hold(self, entry_ids: Iterable[str], for_s: float | None = None) -> None:
        """Start renewing these tasks, for lease_max_s or for_s.

        A task delivered again after it was lost is this worker's again: its mark goes.
        """
        until = time.monotonic() + (self._lease_max_s if for_s is None else for_s)
        with self._lock:
            for entry_id in entry_ids:
                self._held[entry_id] = until
                self._lost.discard(entry_id)

    def release(self, entry_ids: Iterable[str]) -> None:
        """Stop renewing these tasks: they were acked, moved or left for others."""
        with self._lock:
            for entry_id in entry_ids:
                self._held.pop(entry_id, None)
                self._lost.discard(entry_id)

    def is_lost(self, entry_id: str) -> bool:
        """True when a renewal found the task owned by another consumer."""
        with self._lock:
            return entry_id in self._lost

    def _due(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return [entry_id for entry_id, until in self._held.items() if until >= now]

    def _run(self) -> None:
        with asyncio.Runner() as runner:
            client = self._client_factory()
            queue = TaskQueue(client, self._settings)
            try:
                while not self._stopping.wait(self._interval_s):
                    runner.run(self._renew(queue))
            finally:
                runner.run(client.aclose())

    async def _renew(self, queue: TaskQueue) -> None:
        due = self._due()
        if not due:
            return
        try:
            kept = set(await queue.renew(self._consumer, due))
        except RedisError as error:
            log.warning("could not renew %d task(s): %s", len(due), error)
            return
        with self._lock:
            # A task acked since `due` was taken is released, not lost.
            lost = [entry_id for entry_id in due if entry_id not in kept and entry_id in self._held]
            for entry_id in lost:
                self._lost.add(entry_id)
                del self._held[entry_id]
        if lost:
            log.warning("%d task(s) were reclaimed by other workers: %s", len(lost), lost[:10])
