"""Worker: an external consumer of the task group, running the service worker's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.core.settings import Settings
from service.tasks.handlers.python_handler import PythonHandler
from service.tasks.worker_process import Worker as ServiceWorker
from shield_client.client import _default_consumer


class Worker:
    """Runs `handler` (a function or coroutine function, as ``python:`` handlers are) on the
    task group with every guarantee of the deployed worker: leases, ownership-checked acks,
    backoff, dead letters, reclaim, concurrency and the shared rate limit.

    ``await Worker(handler, redis_url=...).run()`` works until ``stop()``.
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        consumer: str | None = None,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings or Settings(**overrides)
        self._executor = ThreadPoolExecutor(
            self.settings.worker_concurrency, thread_name_prefix="handler"
        )
        self._worker = ServiceWorker(
            self.settings,
            PythonHandler(handler, self._executor),
            consumer or _default_consumer(),
        )

    async def run(self) -> None:
        """Consume until stop(); then finish what runs, ack it, and return."""
        try:
            await self._worker.run()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        """Ask the worker to stop; safe from a signal handler or another thread."""
        self._worker.stop()

    def run_forever(self) -> None:
        """Run in a new event loop until stop() (from a signal handler, say)."""
        asyncio.run(self.run())
