"""Keeping a worker's hold on the tasks it holds, from a thread of its own.

A task stays pending for its worker until acked; once it has been idle for claim_idle_ms any
other worker may reclaim it. A task that runs longer than that must keep being renewed, or
live workers steal each other's work and a task that succeeds is counted as poison.

What to renew comes from the delivery ledger, and what a renewal could not keep goes back to
it as lost. The renewal runs in a thread with its own event loop and Redis connection, so a
handler that blocks the worker's loop cannot stop it. The ledger stops listing a delivery
lease_max_ms after it was received, so a handler that hangs forever lets another worker take
its task.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.core.settings import Settings
from service.tasks.ledger import DeliveryLedger
from service.tasks.task_queue import TaskQueue

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews what the ledger lists every interval_s, until stopped."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], Redis],
        consumer: str,
        ledger: DeliveryLedger,
        interval_s: float,
    ) -> None:
        self._settings = settings
        self._client_factory = client_factory
        self._consumer = consumer
        self._ledger = ledger
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=self._interval_s + 5)

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
        due = self._ledger.renewable()
        if not due:
            return
        try:
            kept = set(await queue.renew(self._consumer, due))
        except RedisError as error:
            log.warning("could not renew %d task(s): %s", len(due), error)
            return
        lost = self._ledger.mark_lost(entry_id for entry_id in due if entry_id not in kept)
        if lost:
            log.warning("%d task(s) were reclaimed by other workers: %s", len(lost), lost[:10])
