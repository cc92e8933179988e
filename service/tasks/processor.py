"""One delivery through the handler, and the move its outcome calls for.

The queue (task_queue) does every move atomically; the ledger knows what this worker holds;
this module decides which move, and which events tell the front-ends about it:

- success: the delivery is finished, and acked with the worker's next round trip;
- RetryLater (429, 503, ``context.retry_after``): deferred to its time, or with backoff, and
  not counted as a failed attempt; a task busy for longer than lease_max_ms is dead-lettered;
- PermanentFailure (another 4xx): dead-lettered after this one attempt;
- any other exception: a failed attempt, deferred with backoff, dead-lettered at the last;
- a malformed entry, or one delivered more than retry_attempts times without an ack (it
  kills its worker): dead-lettered before any handler sees it;
- its job cancelled while it runs (``cancel_jobs``): the context says so, an interruptible
  handler's call is cancelled, and if the handler then stops with any error the chunk is
  acked as cancelled, neither retried nor dead-lettered. A handler that returns has done
  its work, and the chunk is done.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from service.core.raw_text import is_utf8
from service.core.settings import Settings
from service.core.trace_context import normalized_traceparent, trace_metadata
from service.events.wire import Event
from service.tasks.backoff import backoff_ms
from service.tasks.handlers.context import CancelFlag, HandlerContext
from service.tasks.handlers.http_semantics import FailedAttempt
from service.tasks.handlers.loading import Handler
from service.tasks.handlers.outcomes import PermanentFailure, RetryLater
from service.tasks.ledger import DeliveryLedger
from service.tasks.task_format import MalformedTask, Task, decode_task
from service.tasks.task_queue import Delivery, TaskQueue
from service.tasks.tracing import UNTRACED, AttemptTracing

log = logging.getLogger(__name__)

Publish = Callable[[Event], Coroutine[Any, Any, object]]


def idempotency_key(task: Task) -> str:
    """The same for every attempt at one task (its retries are new stream entries): the
    chunk's job, id and content."""
    digest = hashlib.sha256()
    for part in (task.job_id, task.chunk_id, task.content):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()[:40]


def _iso_from_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def _age_ms(timestamp: str, now_ms: int) -> int | None:
    try:
        enqueued = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if enqueued.tzinfo is None:
        enqueued = enqueued.replace(tzinfo=UTC)
    return now_ms - int(enqueued.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _Running:
    job_id: str
    cancel: CancelFlag
    # The task the handler runs in: cancelled to stop an interruptible handler.
    runner: asyncio.Task[Any]


def _describe(error: Exception) -> str:
    if isinstance(error, FailedAttempt):
        return str(error)
    return f"{type(error).__name__}: {error}"


class TaskProcessor:
    """Screens and runs deliveries for one consumer."""

    def __init__(
        self,
        queue: TaskQueue,
        handler: Handler,
        settings: Settings,
        consumer: str,
        ledger: DeliveryLedger,
        publish: Publish,
        on_deferred: Callable[[int], None] = lambda due_ms: None,
        draw: Callable[[], float] = random.random,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        tracing: AttemptTracing = UNTRACED,
    ) -> None:
        self._queue = queue
        self._handler = handler
        self._settings = settings
        self._consumer = consumer
        self._ledger = ledger
        self._publish = publish
        self._on_deferred = on_deferred
        self._draw = draw
        self._now_ms = now_ms
        self._tracing = tracing
        self._running: dict[str, _Running] = {}

    def running_jobs(self) -> list[str]:
        """The jobs of the handlers running now."""
        return sorted({running.job_id for running in self._running.values()})

    def cancel_jobs(self, job_ids: set[str]) -> int:
        """Tell the running handlers of these jobs that they are cancelled, and cancel the
        calls that can be; returns how many were told."""
        told = 0
        for running in self._running.values():
            if running.job_id in job_ids and not running.cancel.is_set():
                running.cancel.set()
                if self._handler.interruptible:
                    running.runner.cancel()
                told += 1
        return told

    async def screen(self, delivery: Delivery) -> Task | None:
        """Decode a delivery; malformed and poison tasks go straight to the dead letters."""
        try:
            task = decode_task(delivery.entry_id, delivery.fields)
        except MalformedTask as error:
            await self._dead_letter(delivery, f"malformed: {error}", 0)
            return None
        if delivery.deliveries > self._settings.retry_attempts:
            reason = f"poison: delivered {delivery.deliveries} times without an ack"
            await self._dead_letter(delivery, reason, delivery.deliveries - 1, task)
            return None
        return task

    async def run(self, delivery: Delivery, task: Task, announced: asyncio.Event) -> None:
        """Run the handler once and settle the outcome. Whatever it writes besides the ack
        (a retry, a dead letter, progress) waits for `announced`: the batch's
        ingestion.started comes first on the events stream.

        The handler runs in the caller's own task, not one of its own: a task per call cost
        as much as the rest of a no-op attempt. A cancelled job's handler is stopped by
        cancelling this task, which then takes the CancelledError back (uncancel) and goes
        on to ack the chunk as cancelled."""
        if not self._ledger.start(delivery.entry_id):
            log.warning("task %s was reclaimed by another worker; skipped", task.message_id)
            return
        runner = asyncio.current_task()
        if runner is None:
            raise RuntimeError("TaskProcessor.run must run in an asyncio task")
        cancel = CancelFlag()
        stopped_by_cancel = False
        try:
            # The attempt's span (when tracing) is current in this task while the handler
            # runs, and sees the outcome raised inside it.
            with self._tracing.attempt(task) as traceparent:
                context = HandlerContext(
                    message_id=task.message_id,
                    job_id=task.job_id,
                    chunk_id=task.chunk_id,
                    idempotency_key=idempotency_key(task),
                    _report_progress=_ProgressReporter(self._publish, task, announced),
                    traceparent=traceparent,
                    _cancel=cancel,
                )
                self._running[delivery.entry_id] = _Running(task.job_id, cancel, runner)
                try:
                    await self._handler(task.as_handler_payload(), context)
                except asyncio.CancelledError:
                    if not cancel.is_set():
                        raise
                    stopped_by_cancel = True
                except Exception:
                    if not cancel.is_set():
                        raise
                    stopped_by_cancel = True
                finally:
                    self._running.pop(delivery.entry_id, None)
                    if cancel.is_set() and runner.cancelling():
                        # The one cancel cancel_jobs asked for, whether the handler let it
                        # out or not: later awaits in this task must not see it.
                        runner.uncancel()
        except RetryLater as busy:
            await self._defer_busy(delivery, task, busy, announced)
        except PermanentFailure as refused:
            await self._dead_letter(delivery, refused.reason, task.retry_count + 1, task, announced)
        except Exception as error:  # noqa: BLE001 - any other handler failure is a failed attempt
            await self._fail(delivery, task, _describe(error), announced)
        else:
            if stopped_by_cancel:
                await self._move(
                    delivery,
                    announced,
                    lambda: self._queue.ack_cancelled(
                        self._consumer, delivery.entry_id, "stopped: its job was cancelled"
                    ),
                )
                return
            if not self._ledger.finish(delivery.entry_id, task):
                log.warning(
                    "task %s was reclaimed by another worker while it ran; not acked",
                    task.message_id,
                )

    async def _fail(
        self, delivery: Delivery, task: Task, error: str, announced: asyncio.Event
    ) -> None:
        attempt = task.retry_count + 1
        log.warning(
            "task %s (job %s) failed, attempt %d: %s", task.message_id, task.job_id, attempt, error
        )
        if attempt >= self._settings.retry_attempts:
            await self._dead_letter(delivery, error, attempt, task, announced)
            return
        delay_ms = backoff_ms(
            attempt,
            self._settings.retry_backoff_ms,
            self._settings.retry_backoff_max_ms,
            self._draw,
        )
        await self._defer(
            delivery, task.retried(attempt), delay_ms, "retried", error, attempt, announced
        )

    async def _defer_busy(
        self, delivery: Delivery, task: Task, busy: RetryLater, announced: asyncio.Event
    ) -> None:
        # Counted apart from retry_count (busy is not a failed attempt), so that the n-th
        # busy answer without a time waits like the n-th retry: a busy service is not hit
        # once a second per task until lease_max_ms.
        deferred = task.deferred_busy()
        if busy.delay_s is not None:
            delay_ms = int(busy.delay_s * 1000)
        else:
            delay_ms = backoff_ms(
                deferred.busy_count,
                self._settings.retry_backoff_ms,
                self._settings.retry_backoff_max_ms,
                self._draw,
            )
        # Busy retries are capped only by lease_max_ms since the task was queued (or
        # requeued): one that would come back past it is dead-lettered now, not after the wait.
        age_ms = _age_ms(task.timestamp, self._now_ms())
        if age_ms is not None and age_ms + delay_ms > self._settings.lease_max_ms:
            reason = f"busy for longer than lease_max_ms ({self._settings.lease_max_ms}): "
            await self._dead_letter(
                delivery, reason + busy.reason, task.retry_count + 1, task, announced
            )
            return
        log.info("task %s deferred %d ms: %s", task.message_id, delay_ms, busy.reason)
        await self._defer(
            delivery, deferred, delay_ms, "deferred", busy.reason, task.retry_count, announced, True
        )

    async def _defer(
        self,
        delivery: Delivery,
        task: Task,
        delay_ms: int,
        counter: str,
        error: str,
        attempt: int,
        announced: asyncio.Event,
        busy: bool = False,
    ) -> None:
        due_ms = self._now_ms() + delay_ms
        failed = _task_event(
            "ingestion.failed",
            task,
            error=error,
            attempt=attempt,
            retrying=True,
            retry_at=_iso_from_ms(due_ms),
            **({"busy": True} if busy else {}),
        )
        moved = await self._move(
            delivery,
            announced,
            lambda: self._queue.defer(
                self._consumer, delivery, task, due_ms, counter, [failed.to_fields()], error
            ),
        )
        if moved:
            self._on_deferred(due_ms)

    async def _dead_letter(
        self,
        delivery: Delivery,
        reason: str,
        attempts: int,
        task: Task | None = None,
        announced: asyncio.Event | None = None,
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
        traceparent = task.traceparent if task else _entry_traceparent(delivery)
        data = {"message_id": delivery.entry_id, "error": reason, "attempts": attempts}
        events.append(
            Event(
                type="ingestion.dead_lettered",
                job_id=job_id if is_utf8(job_id) else "",
                data=data,
                metadata=trace_metadata(traceparent),
            )
        )
        fields = [event.to_fields() for event in events]
        await self._move(
            delivery,
            announced,
            lambda: self._queue.dead_letter(self._consumer, delivery, reason, attempts, fields),
        )

    async def _move(
        self,
        delivery: Delivery,
        announced: asyncio.Event | None,
        write: Callable[[], Awaitable[bool]],
    ) -> bool:
        """Make one move of a delivery this worker still holds, once its batch is announced;
        False when it is another's."""
        if not self._ledger.moving(delivery.entry_id):
            log.warning("task %s was reclaimed by another worker; not moved", delivery.entry_id)
            return False
        try:
            if announced is not None:
                await announced.wait()
            moved = await write()
        except RedisError:
            # Left pending for reclaim: renewing it would hide it until lease_max_ms.
            self._ledger.release([delivery.entry_id])
            raise
        self._ledger.moved(delivery.entry_id)
        if not moved:
            log.warning("task %s was reclaimed by another worker; not moved", delivery.entry_id)
        return moved


class _ProgressReporter:
    """``context.progress`` for one attempt: each report is published on the worker's loop
    once the batch is announced, one at a time, in the order reported. Made per attempt and
    cheap until used: the loop is looked up here, the lock on the first report."""

    __slots__ = ("_publish", "_task", "_announced", "_loop", "_in_order")

    def __init__(self, publish: Publish, task: Task, announced: asyncio.Event) -> None:
        self._publish = publish
        self._task = task
        self._announced = announced
        self._loop = asyncio.get_running_loop()
        self._in_order: asyncio.Lock | None = None

    def __call__(self, fraction: float, message: str) -> None:
        event = _task_event("ingestion.progress", self._task, progress=fraction, message=message)
        future = asyncio.run_coroutine_threadsafe(self._publish_when_announced(event), self._loop)
        future.add_done_callback(_log_progress_failure)

    async def _publish_when_announced(self, event: Event) -> None:
        # Made on the loop, by the first report to get there: its waiters are served first
        # come, so the reports keep their order.
        if self._in_order is None:
            self._in_order = asyncio.Lock()
        async with self._in_order:
            await self._announced.wait()
            await self._publish(event)


def _log_progress_failure(future: Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("could not emit ingestion.progress: %s", future.exception())


def _entry_traceparent(delivery: Delivery) -> str:
    """The traceparent of an entry that did not decode, if it holds a well-formed one."""
    value = delivery.fields.get("traceparent", "")
    return normalized_traceparent(value) if is_utf8(value) else ""


def _task_event(event_type: str, task: Task, **extra: Any) -> Event:
    data = {"message_id": task.message_id, "chunk_id": task.chunk_id, **extra}
    return Event(
        type=event_type, job_id=task.job_id, data=data, metadata=trace_metadata(task.traceparent)
    )


def batch_event_fields(event_type: str, tasks: list[Task]) -> list[dict[str, str]]:
    """Stream fields of one event per job and trace in the batch, naming its tasks.

    Not one per task: a task stream of 10,000 chunks would otherwise write 20,000 events and
    trim every other event out of a stream kept at MAXLEN 10,000. Tasks of one job submitted
    under different traceparents get an event each, so every event names its trace.
    """
    by_job: dict[tuple[str, str], list[Task]] = {}
    for task in tasks:
        by_job.setdefault((task.job_id, task.traceparent), []).append(task)
    return [
        Event(
            type=event_type,
            job_id=job_id,
            data={
                "count": len(job_tasks),
                "message_ids": [task.message_id for task in job_tasks],
                "chunk_ids": [task.chunk_id for task in job_tasks],
            },
            metadata=trace_metadata(traceparent),
        ).to_fields()
        for (job_id, traceparent), job_tasks in by_job.items()
    ]
