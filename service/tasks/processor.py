"""Running a batch of task deliveries through the handler: the retry and dead-letter policy.

The queue (service.queue) does every move atomically; this module decides which move, and
which events tell the front-ends about it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from service.core.raw_text import is_utf8
from service.events.wire import Event
from service.tasks.leases import LeaseKeeper
from service.tasks.task_format import MalformedTask, Task, decode_task
from service.tasks.task_queue import Delivery, Finished, TaskQueue

log = logging.getLogger(__name__)

TaskHandler = Callable[[Mapping[str, Any]], Awaitable[object] | object]


async def call_handler(handler: TaskHandler, payload: Mapping[str, Any]) -> None:
    """Call a sync or async handler; sync ones run inline, the worker has nothing else to do."""
    result = handler(payload)
    if inspect.isawaitable(result):
        await result


class TaskProcessor:
    """Handles deliveries: success is acked with the next read, failure retried or dead-lettered."""

    def __init__(
        self, queue: TaskQueue, handler: TaskHandler, retry_attempts: int, consumer: str
    ) -> None:
        self._queue = queue
        self._handler = handler
        self._retry_attempts = retry_attempts
        self._consumer = consumer

    async def screen(self, deliveries: list[Delivery]) -> list[tuple[Delivery, Task]]:
        """The deliveries a handler can be given; malformed and poison ones are dead-lettered."""
        runnable: list[tuple[Delivery, Task]] = []
        for delivery in deliveries:
            task = await self._screen(delivery)
            if task is not None:
                runnable.append((delivery, task))
        return runnable

    async def run(
        self,
        runnable: list[tuple[Delivery, Task]],
        leases: LeaseKeeper,
        should_stop: Callable[[], bool],
    ) -> Finished:
        """Handle screened tasks in order; stop early when asked, leaving the rest pending.

        A task that another worker reclaimed meanwhile is skipped: it is that worker's now.
        Returns what succeeded, for the caller to ack with its next read.
        """
        succeeded: list[Task] = []
        for delivery, task in runnable:
            if should_stop():
                break
            if leases.is_lost(delivery.entry_id):
                log.warning("task %s was reclaimed by another worker; skipped", task.message_id)
                continue
            try:
                await call_handler(self._handler, task.as_handler_payload())
            except Exception as error:  # noqa: BLE001 - any handler failure is a task failure
                await self._fail(delivery, task, f"{type(error).__name__}: {error}")
            else:
                succeeded.append(task)
        return Finished(
            entry_ids=[task.message_id for task in succeeded],
            events=batch_event_fields("ingestion.completed", succeeded),
        )

    async def _screen(self, delivery: Delivery) -> Task | None:
        """Decode a delivery; malformed and poison tasks go straight to the dead letters."""
        try:
            task = decode_task(delivery.entry_id, delivery.fields)
        except MalformedTask as error:
            await self._dead_letter(delivery, f"malformed: {error}", 0)
            return None
        if delivery.deliveries > self._retry_attempts:
            reason = f"poison: delivered {delivery.deliveries} times without an ack"
            await self._dead_letter(delivery, reason, delivery.deliveries - 1, task)
            return None
        return task

    async def _fail(self, delivery: Delivery, task: Task, error: str) -> None:
        attempt = task.retry_count + 1
        log.warning(
            "task %s (job %s) failed, attempt %d: %s", task.message_id, task.job_id, attempt, error
        )
        if attempt >= self._retry_attempts:
            await self._dead_letter(delivery, error, attempt, task)
            return
        failed = _task_event("ingestion.failed", task, error=error, attempt=attempt, retrying=True)
        moved = await self._queue.retry(
            self._consumer, delivery, task.retried(attempt), [failed.to_fields()]
        )
        if not moved:
            log.warning("task %s was reclaimed by another worker; not retried", task.message_id)

    async def _dead_letter(
        self, delivery: Delivery, reason: str, attempts: int, task: Task | None = None
    ) -> None:
        log.error(
            "task %s dead-lettered after %d attempt(s): %s", delivery.entry_id, attempts, reason
        )
        events = []
        if task is not None:
            events.append(
                _task_event(
                    "ingestion.failed", task, error=reason, attempt=attempts, retrying=False
                )
            )
        # A malformed entry's job_id may be bytes that are not UTF-8: keep them out of events.
        job_id = task.job_id if task else delivery.fields.get("job_id", "")
        data = {"message_id": delivery.entry_id, "error": reason, "attempts": attempts}
        events.append(
            Event(
                type="ingestion.dead_lettered",
                job_id=job_id if is_utf8(job_id) else "",
                data=data,
            )
        )
        moved = await self._queue.dead_letter(
            self._consumer, delivery, reason, attempts, [event.to_fields() for event in events]
        )
        if not moved:
            log.warning(
                "task %s was reclaimed by another worker; not dead-lettered", delivery.entry_id
            )


def _task_event(event_type: str, task: Task, **extra: Any) -> Event:
    data = {"message_id": task.message_id, "chunk_id": task.chunk_id, **extra}
    return Event(type=event_type, job_id=task.job_id, data=data)


def batch_event_fields(event_type: str, tasks: list[Task]) -> list[dict[str, str]]:
    """Stream fields of one event per job in the batch, naming its tasks.

    Not one per task: a task stream of 10,000 chunks would otherwise write 20,000 events and
    trim every other event out of a stream kept at MAXLEN 10,000.
    """
    by_job: dict[str, list[Task]] = {}
    for task in tasks:
        by_job.setdefault(task.job_id, []).append(task)
    return [
        Event(
            type=event_type,
            job_id=job_id,
            data={
                "count": len(job_tasks),
                "message_ids": [task.message_id for task in job_tasks],
                "chunk_ids": [task.chunk_id for task in job_tasks],
            },
        ).to_fields()
        for job_id, job_tasks in by_job.items()
    ]
