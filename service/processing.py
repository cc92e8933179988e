"""Running a batch of task deliveries through the handler, with retries and dead letters."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from service.bus import EventPublisher
from service.events import Event, MalformedTask, Task, decode_task
from service.queue import Delivery, TaskQueue

log = logging.getLogger(__name__)

TaskHandler = Callable[[Mapping[str, Any]], Awaitable[object] | object]


async def call_handler(handler: TaskHandler, payload: Mapping[str, Any]) -> None:
    """Call a sync or async handler; sync ones run inline, the worker has nothing else to do."""
    result = handler(payload)
    if inspect.isawaitable(result):
        await result


class TaskProcessor:
    """Handles deliveries: ack on success, requeue or dead-letter on failure."""

    def __init__(
        self,
        redis: Redis,
        queue: TaskQueue,
        publisher: EventPublisher,
        handler: TaskHandler,
        retry_attempts: int,
    ) -> None:
        self._redis = redis
        self._queue = queue
        self._publisher = publisher
        self._handler = handler
        self._retry_attempts = retry_attempts

    async def process(
        self, deliveries: list[Delivery], should_stop: Callable[[], bool]
    ) -> list[Task]:
        """Handle a batch in order; stop early when asked, leaving the rest pending.

        Returns the tasks that succeeded. Their ack is the caller's to send, with ack_in on
        the pipeline of its next read, so a batch costs two round trips, not three.
        """
        runnable: list[tuple[Delivery, Task]] = []
        for delivery in deliveries:
            task = await self._screen(delivery)
            if task is not None:
                runnable.append((delivery, task))
        await self._announce_started([task for _, task in runnable])
        acked: list[Task] = []
        for delivery, task in runnable:
            if should_stop():
                break
            try:
                await call_handler(self._handler, task.as_handler_payload())
            except Exception as error:  # noqa: BLE001 - any handler failure is a task failure
                await self._fail(delivery, task, f"{type(error).__name__}: {error}")
            else:
                acked.append(task)
        return acked

    async def _screen(self, delivery: Delivery) -> Task | None:
        """Decode a delivery; malformed and poison tasks go straight to the dead letters."""
        try:
            task = decode_task(delivery.entry_id, delivery.fields)
        except MalformedTask as error:
            await self._dead_letter(delivery, f"malformed: {error}", 0)
            return None
        if delivery.deliveries > self._retry_attempts:
            reason = f"poison: delivered {delivery.deliveries} times without an ack"
            await self._dead_letter(delivery, reason, delivery.deliveries - 1)
            return None
        return task

    async def _announce_started(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        async with self._redis.pipeline(transaction=False) as pipeline:
            for event in _batch_events("ingestion.started", tasks):
                self._publisher.publish_in(pipeline, event)
            await pipeline.execute()

    def ack_in(self, pipeline: Any, tasks: list[Task]) -> None:
        """Queue the ack of finished tasks and their completion events on a pipeline."""
        if not tasks:
            return
        self._queue.ack_in(pipeline, [task.message_id for task in tasks])
        for event in _batch_events("ingestion.completed", tasks):
            self._publisher.publish_in(pipeline, event)

    async def ack(self, tasks: list[Task]) -> None:
        """Ack finished tasks in a round trip of their own."""
        if not tasks:
            return
        async with self._redis.pipeline(transaction=False) as pipeline:
            self.ack_in(pipeline, tasks)
            await pipeline.execute()

    async def _fail(self, delivery: Delivery, task: Task, error: str) -> None:
        attempt = task.retry_count + 1
        log.warning(
            "task %s (job %s) failed, attempt %d: %s",
            task.message_id,
            task.job_id,
            attempt,
            error,
        )
        if attempt >= self._retry_attempts:
            await self._dead_letter(delivery, error, attempt, task)
            return
        failed = _task_event("ingestion.failed", task, error=error, attempt=attempt, retrying=True)
        async with self._redis.pipeline(transaction=True) as transaction:
            self._queue.retry_in(transaction, delivery, attempt)
            self._publisher.publish_in(transaction, failed)
            await transaction.execute()

    async def _dead_letter(
        self,
        delivery: Delivery,
        reason: str,
        attempts: int,
        task: Task | None = None,
    ) -> None:
        log.error(
            "task %s dead-lettered after %d attempt(s): %s",
            delivery.entry_id,
            attempts,
            reason,
        )
        job_id = task.job_id if task else delivery.fields.get("job_id", "")
        data = {"message_id": delivery.entry_id, "error": reason, "attempts": attempts}
        async with self._redis.pipeline(transaction=True) as transaction:
            self._queue.dead_letter_in(transaction, delivery, reason, attempts)
            if task is not None:
                failed = _task_event(
                    "ingestion.failed",
                    task,
                    error=reason,
                    attempt=attempts,
                    retrying=False,
                )
                self._publisher.publish_in(transaction, failed)
            self._publisher.publish_in(
                transaction,
                Event(type="ingestion.dead_lettered", job_id=job_id, data=data),
            )
            await transaction.execute()


def _task_event(event_type: str, task: Task, **extra: Any) -> Event:
    data = {"message_id": task.message_id, "chunk_id": task.chunk_id, **extra}
    return Event(type=event_type, job_id=task.job_id, data=data)


def _batch_events(event_type: str, tasks: list[Task]) -> list[Event]:
    """One event per job in the batch, naming its tasks.

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
        )
        for job_id, job_tasks in by_job.items()
    ]
