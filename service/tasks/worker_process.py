"""The worker process: ``python -m service.worker [--consumer NAME]``.

It runs up to SHIELD_WORKER_CONCURRENCY tasks at once. The reader reads only into free
slots, and sends each batch's announcement (``ingestion.started``) and the acks of finished
tasks with its next read, one round trip per batch while busy; while it waits (for a slot,
or in a blocking read), the acker sends them instead. A batch's announcement always lands
before anything else said about its tasks: acks follow it in the same round trip, and a
failure, a retry or a progress event waits for it. The promoter adds due retries back to
the stream. Every delivery held is in the DeliveryLedger, from which the lease thread renews.

A task reclaimed from a dead worker runs alone, with nothing else in flight: if it is the
poison that killed that worker, it must not charge a delivery to innocent neighbours. The
worker first checks that something is abandoned (without claiming it), lets what it runs
drain (for twice the reclaim interval at most), then claims one task, runs it and acks it.

Before a batch runs, one script counts its chunks running and acks those of cancelled jobs
unrun (``begin``): the read itself when it does not block, so a busy worker keeps to one
round trip per batch, and a script of its own after a blocking read or a reclaim. While
handlers run, the canceller looks every CANCEL_POLL_S at which of their jobs are being
cancelled, and tells those handlers (processor.cancel_jobs).

On SIGTERM or SIGINT it stops reading, finishes the tasks running, acks them and exits;
tasks it read and had not started stay pending, for another worker to reclaim.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import RedisError

from service.core.consumer_groups import ensure_all_groups, is_missing_group
from service.core.redis_client import create_redis
from service.core.settings import ConfigError, Settings, load_settings
from service.events.bus import EventPublisher
from service.events.wire import Event
from service.tasks.handlers.loading import Handler, build_handler
from service.tasks.leases import LeaseKeeper
from service.tasks.ledger import DeliveryLedger, DeliveryState
from service.tasks.processor import TaskProcessor, batch_event_fields
from service.tasks.rate_limit import HandlerRateLimit
from service.tasks.task_format import Task
from service.tasks.task_queue import PROMOTE_BATCH, Delivery, Finished, TaskQueue
from service.tasks.tracing import AttemptTracing, tracing_from_env

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 1.0
# Look for abandoned tasks this often, and at least as often as they can become claimable.
MAX_RECLAIM_INTERVAL_S = 5.0
# Renew held tasks this many times per claim_idle_ms, so one late renewal costs nothing.
LEASE_RENEWALS_PER_IDLE_TIME = 3
# Other workers' retries come due unannounced: look for them at least this often.
PROMOTE_POLL_S = 1.0
# How long the acker leaves acks and announcements to a waiting reader before it sends them
# itself: a few turns of the loop, far below any handler's own time.
ACK_GRACE_S = 0.001
# How soon a running handler hears that its job was cancelled, at most.
CANCEL_POLL_S = 0.5
UNSETTLED = (DeliveryState.RECEIVED, DeliveryState.RUNNING, DeliveryState.MOVING)


def default_consumer_name() -> str:
    """Host plus pid, unique among live workers."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Reads tasks in the worker group and runs them until told to stop."""

    def __init__(
        self,
        settings: Settings,
        handler: Handler,
        consumer: str,
        tracing: AttemptTracing | None = None,
    ) -> None:
        # The worker's own Redis user (SHIELD_REDIS_WORKER_USERNAME), when the stack made one.
        settings = settings.for_worker()
        self._settings = settings
        self._handler = handler
        self._consumer = consumer
        self._concurrency = settings.worker_concurrency
        self._redis = create_redis(settings)
        self._queue = TaskQueue(self._redis, settings)
        self._publisher = EventPublisher(
            self._redis, settings.stream_events, settings.stream_maxlen
        )
        self._ledger = DeliveryLedger(lease_max_s=settings.lease_max_ms / 1000)
        self._tracing = tracing_from_env(settings) if tracing is None else tracing
        self._processor = TaskProcessor(
            self._queue,
            handler,
            settings,
            consumer,
            self._ledger,
            self._publisher.publish,
            on_deferred=self._retry_deferred,
            tracing=self._tracing,
        )
        self._leases = LeaseKeeper(
            settings,
            lambda: create_redis(settings, max_connections=1),
            consumer,
            self._ledger,
            interval_s=settings.claim_idle_ms / 1000 / LEASE_RENEWALS_PER_IDLE_TIME,
        )
        self._rate_limit = (
            HandlerRateLimit(self._redis, settings) if settings.handler_rate_per_s > 0 else None
        )
        # stop() may run in a signal handler: the flag is seen at once, the event wakes the
        # waits once the loop runs again.
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self._promote_soon = asyncio.Event()
        # Announcements not sent yet, and the event each batch's runners wait on.
        self._outbox_events: list[dict[str, str]] = []
        self._announcing: list[asyncio.Event] = []
        self._reader_waiting = False
        self._runners: set[asyncio.Task[None]] = set()
        self._reclaim_interval_s = min(settings.claim_idle_ms / 2000, MAX_RECLAIM_INTERVAL_S)
        self._next_reclaim = 0.0

    def stop(self) -> None:
        """Ask the worker to finish the tasks running and exit; safe from a signal handler."""
        self._stop_requested = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            # A reader waiting for a slot sees the stop too.
            self._loop.call_soon_threadsafe(self._slot_freed.set)

    def _should_stop(self) -> bool:
        return self._stop_requested

    async def run(self) -> None:
        """Work until stop() is called."""
        self._loop = asyncio.get_running_loop()
        self._leases.start()
        await self._start()
        helpers = [
            asyncio.create_task(self._ack_loop(), name="acker"),
            asyncio.create_task(self._promote_loop(), name="promoter"),
            asyncio.create_task(self._cancel_loop(), name="canceller"),
        ]
        try:
            while not self._stop_requested:
                try:
                    await self._read_once()
                except RedisError as error:
                    await self._recover(error)
        finally:
            await self._finish(helpers)

    async def _start(self) -> None:
        while not self._stop_requested:
            try:
                await ensure_all_groups(self._redis, self._settings)
                await self._announce("worker.started")
                log.info(
                    "worker %s reading %s, %d at a time",
                    self._consumer,
                    self._settings.stream_ingestion,
                    self._concurrency,
                )
                return
            except RedisError as error:
                log.warning("redis unavailable at start, retrying: %s", error)
                await self._sleep_unless_stopping(RECONNECT_DELAY_S)

    async def _recover(self, error: RedisError) -> None:
        if is_missing_group(error):
            # Redis lost its data (a restart without persistence, FLUSHALL, a failover to an
            # empty replica): make the groups again and go on.
            log.warning("consumer group missing, creating the groups again: %s", error)
            try:
                await ensure_all_groups(self._redis, self._settings)
                return
            except RedisError as again:
                error = again
        log.warning("redis unavailable, retrying in %.1fs: %s", RECONNECT_DELAY_S, error)
        await self._sleep_unless_stopping(RECONNECT_DELAY_S)

    # The reader ---------------------------------------------------------------------------

    async def _read_once(self) -> None:
        free = await self._free_slots()
        if free <= 0:
            return
        if time.monotonic() >= self._next_reclaim:
            # Drained first, claimed after: XAUTOCLAIM counts a delivery, and a task claimed
            # and then kept waiting is one more death away from being taken for poison.
            if await self._queue.has_abandoned():
                await self._drain(limit_s=self._reclaim_interval_s * 2)
                if self._stop_requested:
                    return
                reclaimed = await self._queue.reclaim(self._consumer)
                if reclaimed:
                    await self._run_alone(reclaimed[0])
                    return
            self._next_reclaim = time.monotonic() + self._reclaim_interval_s
        events, finished, announced = self._take_outbox()
        # Block only with nothing to send: what is sent with a blocking read is not known to
        # have landed until the read returns, and a batch waits for its announcement.
        block = not events and finished is None
        self._reader_waiting = block
        try:
            deliveries = await self._queue.read(
                self._consumer, finished, events, block=block, count=min(self._batch(), free)
            )
        except RedisError:
            self._outbox_failed(events, finished, announced)
            raise
        finally:
            self._reader_waiting = False
        self._outbox_sent(finished, announced)
        if deliveries and not self._stop_requested:
            await self._launch(deliveries)
        elif deliveries:
            # Read as the stop came: left pending for another worker, never started.
            self._ledger.release(delivery.entry_id for delivery in deliveries)

    def _batch(self) -> int:
        return self._settings.batch_size

    async def _free_slots(self) -> int:
        """Wait until a slot is free; 0 when the worker is stopping (stop() sets the event)."""
        while not self._stop_requested:
            free = self._concurrency - self._ledger.in_flight()
            if free > 0:
                return free
            self._slot_freed.clear()
            self._reader_waiting = True
            if self._outbox_events or self._ledger.has_acks_to_send():
                self._outbox_ready.set()
            try:
                await self._slot_freed.wait()
            finally:
                self._reader_waiting = False
        return 0

    async def _launch(self, deliveries: list[Delivery]) -> None:
        """Hold, screen and start a batch. Its announcement goes with the next round trip,
        ahead of the batch's acks; a failure, a retry or progress waits for it to land."""
        self._ledger.receive(delivery.entry_id for delivery in deliveries)
        runnable: list[tuple[Delivery, Task]] = []
        try:
            for delivery in deliveries:
                task = await self._processor.screen(delivery)
                if task is not None:
                    runnable.append((delivery, task))
        except RedisError:
            # Cut short: what was not dead-lettered is left for reclaim, not held for an hour.
            self._ledger.release(delivery.entry_id for delivery in deliveries)
            raise
        runnable = await self._begin(runnable, [d.entry_id for d in deliveries])
        if not runnable:
            return
        announced = asyncio.Event()
        self._outbox_events += batch_event_fields("ingestion.started", [t for _, t in runnable])
        self._announcing.append(announced)
        for delivery, task in runnable:
            runner = asyncio.create_task(self._run(delivery, task, announced))
            self._runners.add(runner)
            runner.add_done_callback(self._runner_done)
        self._outbox_ready.set()

    async def _drain(self, limit_s: float) -> None:
        """Wait until nothing is in flight (the acker sending what finishes), the stop, or
        limit_s: a task that runs for an hour must not keep this worker from reading, so
        past the limit a reclaimed task runs beside what is still running."""
        deadline = time.monotonic() + limit_s
        self._reader_waiting = True
        self._outbox_ready.set()
        try:
            while self._ledger.in_flight() > 0 and not self._stop_requested:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    return
                self._slot_freed.clear()
                await self._wait_either(self._slot_freed, timeout_s=min(1.0, left_s))
        finally:
            self._reader_waiting = False

    async def _run_alone(self, delivery: Delivery) -> None:
        """Run a reclaimed task, claimed with nothing else in flight, and ack it at once.

        At once, not with the next read: a worker with many tasks to reclaim reclaims them one
        after another without reading, and a finished task left unacked would go to whoever
        reclaims it after this worker dies, one delivery nearer to being taken for poison.
        """
        self._ledger.receive([delivery.entry_id])
        try:
            task = await self._processor.screen(delivery)
        except RedisError:
            self._ledger.release([delivery.entry_id])
            raise
        if task is None or not await self._begin([(delivery, task)], [delivery.entry_id]):
            return
        self._outbox_events += batch_event_fields("ingestion.started", [task])
        try:
            await self._send_outbox()
        except RedisError:
            self._ledger.release([delivery.entry_id])
            raise
        announced = asyncio.Event()
        announced.set()
        await self._run(delivery, task, announced)
        await self._send_outbox()

    async def _begin(
        self, runnable: list[tuple[Delivery, Task]], held: list[str]
    ) -> list[tuple[Delivery, Task]]:
        """What of a batch may run: the begin script acks the tasks of cancelled jobs (a read
        that did not block has begun its batch already)."""
        to_begin = [
            (delivery.entry_id, task.job_id, task.chunk_id)
            for delivery, task in runnable
            if not delivery.begun
        ]
        try:
            cancelled = set(await self._queue.begin(self._consumer, to_begin))
        except RedisError:
            self._ledger.release(held)
            raise
        if cancelled:
            log.info("%d task(s) of cancelled jobs acked unrun", len(cancelled))
            self._ledger.release(cancelled)
        return [(d, t) for d, t in runnable if d.entry_id not in cancelled]

    async def _run(self, delivery: Delivery, task: Task, announced: asyncio.Event) -> None:
        try:
            if self._rate_limit is not None and not await self._rate_limit.acquire(
                self._should_stop
            ):
                self._ledger.release([delivery.entry_id])
                return
            if self._stop_requested:
                # Not started: pending for another worker to reclaim.
                self._ledger.release([delivery.entry_id])
                return
            await self._processor.run(delivery, task, announced)
        except RedisError as error:
            log.warning("task %s left for reclaim after a Redis error: %s", task.message_id, error)
        finally:
            # Whatever did not end finished or moved (a Redis error, a bug) is let go, for
            # another worker to reclaim, rather than renewed for lease_max_ms.
            if self._ledger.state_of(delivery.entry_id) in UNSETTLED:
                self._ledger.release([delivery.entry_id])

    def _runner_done(self, runner: asyncio.Task[None]) -> None:
        self._runners.discard(runner)
        if not runner.cancelled() and runner.exception() is not None:
            log.error("a task runner failed", exc_info=runner.exception())
        self._slot_freed.set()
        self._outbox_ready.set()

    # Acks and announcements ---------------------------------------------------------------

    def _take_outbox(
        self,
    ) -> tuple[list[dict[str, str]], Finished | None, list[asyncio.Event]]:
        events, self._outbox_events = self._outbox_events, []
        announced, self._announcing = self._announcing, []
        sending = self._ledger.sending_acks()
        finished = None
        if sending:
            finished = Finished(
                entry_ids=[entry_id for entry_id, _ in sending],
                events=batch_event_fields("ingestion.completed", [task for _, task in sending]),
                chunks=[(task.job_id, task.chunk_id) for _, task in sending],
            )
        return events, finished, announced

    def _outbox_sent(self, finished: Finished | None, announced: list[asyncio.Event]) -> None:
        if finished is not None:
            self._ledger.acked(finished.entry_ids)
        for event in announced:
            event.set()

    def _outbox_failed(
        self,
        events: list[dict[str, str]],
        finished: Finished | None,
        announced: list[asyncio.Event],
    ) -> None:
        """Send it all again with the next round trip: announcements are plain XADDs, and the
        ack script acks only what this consumer still owns."""
        self._outbox_events = events + self._outbox_events
        self._announcing = announced + self._announcing
        if finished is not None:
            self._ledger.ack_failed(finished.entry_ids)

    async def _ack_loop(self) -> None:
        """Send acks and announcements while the reader waits, so none waits for a read."""
        while not self._stop_requested:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            if not self._reader_waiting:
                continue
            # A moment's grace: a reader waiting for a slot that a runner is about to free
            # wakes within a few turns of the loop and carries the outbox with its read, one
            # round trip per batch instead of two. Only a reader still waiting after it (in a
            # blocking read, or behind handlers that run on) leaves the outbox to the acker.
            await asyncio.sleep(ACK_GRACE_S)
            if self._reader_waiting:
                await self._flush_outbox()

    async def _send_outbox(self) -> None:
        """Send announcements and acks now; on a Redis error they stay queued, and it raises."""
        events, finished, announced = self._take_outbox()
        if not events and finished is None:
            self._outbox_sent(None, announced)
            return
        try:
            await self._queue.ack(self._consumer, finished, events)
        except RedisError:
            self._outbox_failed(events, finished, announced)
            raise
        self._outbox_sent(finished, announced)

    async def _flush_outbox(self) -> None:
        """Send acks and announcements; on a Redis error, wait and leave them for next time."""
        try:
            await self._send_outbox()
        except RedisError as error:
            log.warning("could not send acks and announcements, sending again: %s", error)
            if not self._stop_requested:
                await self._sleep_unless_stopping(RECONNECT_DELAY_S)
                self._outbox_ready.set()

    # Retries that come due ----------------------------------------------------------------

    def _retry_deferred(self, due_ms: int) -> None:
        self._promote_soon.set()

    async def _promote_loop(self) -> None:
        while not self._stop_requested:
            self._promote_soon.clear()
            try:
                moved, wait_ms = await self._queue.promote()
            except RedisError as error:
                log.warning("could not move due retries back: %s", error)
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            if moved:
                log.info("%d retried task(s) due, back on the stream", moved)
            if moved >= PROMOTE_BATCH:
                continue
            wait_s = PROMOTE_POLL_S if wait_ms is None else min(PROMOTE_POLL_S, wait_ms / 1000)
            await self._wait_either(self._promote_soon, timeout_s=wait_s)

    # Cancelled jobs ------------------------------------------------------------------------

    async def _cancel_loop(self) -> None:
        while not self._stop_requested:
            await self._sleep_unless_stopping(CANCEL_POLL_S)
            jobs = self._processor.running_jobs()
            if not jobs:
                continue
            try:
                cancelling = await self._queue.cancelling_jobs(jobs)
            except RedisError as error:
                log.warning("could not look for cancelled jobs: %s", error)
                continue
            if cancelling and self._processor.cancel_jobs(cancelling):
                log.info("told the handlers of cancelled job(s) %s", sorted(cancelling))

    # Stopping -----------------------------------------------------------------------------

    async def _finish(self, helpers: list[asyncio.Task[None]]) -> None:
        # The helpers see the stop flag once woken. Not cancelled: redis-py may swallow a
        # cancellation in the middle of a command.
        self._outbox_ready.set()
        self._promote_soon.set()
        await asyncio.gather(*helpers, return_exceptions=True)
        # Announce what runs, let it finish (a runner still waiting for a rate token lets
        # its task go), then ack it.
        await self._flush_outbox()
        if self._runners:
            await asyncio.gather(*self._runners, return_exceptions=True)
        await self._flush_outbox()
        try:
            await self._announce("worker.stopped")
        except RedisError as error:
            log.warning("could not announce worker.stopped: %s", error)
        self._leases.stop()
        # The last spans are exported, in a thread: the exporter's HTTP call blocks.
        await asyncio.to_thread(self._tracing.shutdown)
        await self._handler.aclose()
        await self._redis.aclose()
        log.info("worker %s stopped", self._consumer)

    async def _wait_either(self, event: asyncio.Event, timeout_s: float) -> None:
        """Wait for `event`, the stop, or the timeout, whichever comes first."""
        waits = [
            asyncio.ensure_future(event.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _announce(self, event_type: str) -> None:
        await self._publisher.publish(
            Event(type=event_type, data={"consumer": self._consumer, "pid": os.getpid()})
        )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed (uvicorn[standard] brings it): it halves the loop's overhead."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__)
    parser.add_argument("--consumer", default=None, help="consumer name (default: host-pid)")
    return parser.parse_args(argv)


async def serve(settings: Settings, handler: Handler, consumer: str) -> None:
    """Run a worker with SIGTERM and SIGINT wired to a graceful stop."""
    worker = Worker(settings, handler, consumer)

    def request_stop(signum: int, frame: object) -> None:
        worker.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    await worker.run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request's full URL at INFO, credentials and query included.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = load_settings()
        executor = ThreadPoolExecutor(settings.worker_concurrency, thread_name_prefix="handler")
        # Built here, so a missing or bad handler stops the worker before it reads anything.
        handler = build_handler(settings, executor)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    consumer = args.consumer or default_consumer_name()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(settings, handler, consumer))
    executor.shutdown(wait=False, cancel_futures=True)
    return 0
