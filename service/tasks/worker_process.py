"""The worker process: ``python -m service.worker [--consumer NAME]``.

On SIGTERM or SIGINT it stops reading, finishes the task in hand, acks what it finished and
exits; tasks of the batch it did not start, and of the batch it read ahead, stay pending and
are reclaimed by another worker.
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

from redis.exceptions import RedisError

from service.core.consumer_groups import ensure_all_groups, is_missing_group
from service.core.redis_client import create_redis
from service.core.settings import ConfigError, Settings, load_settings
from service.events.bus import EventPublisher
from service.events.wire import Event
from service.tasks.handler_loading import load_handler
from service.tasks.leases import LeaseKeeper
from service.tasks.processor import TaskHandler, TaskProcessor, batch_event_fields
from service.tasks.task_queue import Delivery, Finished, TaskQueue

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 1.0
# Look for abandoned tasks this often, and at least as often as they can become claimable.
MAX_RECLAIM_INTERVAL_S = 5.0
# Renew held tasks this many times per claim_idle_ms, so one late renewal costs nothing.
LEASE_RENEWALS_PER_IDLE_TIME = 3
# A worker reads its next batch ahead only while batches run this fast: it saves a round trip
# per batch, and a batch held while a slow one runs would keep other workers waiting.
READ_AHEAD_MAX_BATCH_S = 0.05


def default_consumer_name() -> str:
    """Host plus pid, unique among live workers."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Reads tasks in the worker group and runs them until told to stop."""

    def __init__(self, settings: Settings, handler: TaskHandler, consumer: str) -> None:
        self._settings = settings
        self._consumer = consumer
        self._redis = create_redis(settings)
        self._queue = TaskQueue(self._redis, settings)
        self._publisher = EventPublisher(
            self._redis, settings.stream_events, settings.stream_maxlen
        )
        self._processor = TaskProcessor(self._queue, handler, settings.retry_attempts, consumer)
        self._leases = LeaseKeeper(
            settings,
            lambda: create_redis(settings, max_connections=1),
            consumer,
            interval_s=settings.claim_idle_ms / 1000 / LEASE_RENEWALS_PER_IDLE_TIME,
            lease_max_s=settings.lease_max_ms / 1000,
        )
        # stop() may run in a signal handler while a sync task handler blocks the loop: the
        # flag is seen between tasks, the event wakes the sleeps once the loop runs again.
        self._stop_requested = False
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Tasks handled but not acked yet: their ack rides with the next read.
        self._finished: Finished | None = None
        self._reclaim_interval_s = min(settings.claim_idle_ms / 2000, MAX_RECLAIM_INTERVAL_S)
        self._next_reclaim = 0.0
        # The next batch, read with the announcement of the one running: delivered to this
        # worker and held, not started.
        self._ahead: list[Delivery] = []
        self._claim_idle_s = settings.claim_idle_ms / 1000
        self._ahead_read_at = 0.0
        self._batches_are_quick = True

    def stop(self) -> None:
        """Ask the worker to finish the task in hand and exit; safe from a signal handler."""
        self._stop_requested = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    def _should_stop(self) -> bool:
        return self._stop_requested

    async def run(self) -> None:
        """Work until stop() is called."""
        self._loop = asyncio.get_running_loop()
        self._leases.start()
        await self._start()
        try:
            while not self._stop_requested:
                try:
                    await self._work_once()
                except RedisError as error:
                    await self._recover(error)
        finally:
            await self._finish()

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

    async def _start(self) -> None:
        while not self._stop_requested:
            try:
                await ensure_all_groups(self._redis, self._settings)
                await self._announce("worker.started")
                log.info(
                    "worker %s reading %s",
                    self._consumer,
                    self._settings.stream_ingestion,
                )
                return
            except RedisError as error:
                log.warning("redis unavailable at start, retrying: %s", error)
                await self._sleep_unless_stopping(RECONNECT_DELAY_S)

    async def _finish(self) -> None:
        try:
            await self._ack_finished()
            await self._announce("worker.stopped")
        except RedisError as error:
            log.warning("could not announce worker.stopped: %s", error)
        self._leases.stop()
        await self._redis.aclose()
        log.info("worker %s stopped", self._consumer)

    async def _ack_finished(self, events: list[dict[str, str]] | None = None) -> None:
        """Ack the finished batch, if any, and publish `events` after its own."""
        finished = self._finished
        # On an error the tasks stay finished and held, and the ack goes again: the script
        # acks only what this consumer still owns, so a second send is harmless.
        await self._queue.ack(self._consumer, finished, events or [])
        if finished is not None:
            self._finished = None
            self._leases.release(finished.entry_ids)

    async def _work_once(self) -> None:
        reclaim_due = time.monotonic() >= self._next_reclaim
        if reclaim_due and not self._ahead:
            await self._ack_finished()
            reclaimed = await self._queue.reclaim(self._consumer)
            if reclaimed:
                # Alone, with no read-ahead: a poison task that kills the worker must not
                # charge a delivery to a batch read with it.
                await self._run_batch(reclaimed, read_ahead=False)
                return
            self._next_reclaim = time.monotonic() + self._reclaim_interval_s
        deliveries, self._ahead = self._ahead, []
        if deliveries:
            deliveries = await self._still_mine(deliveries)
        if not deliveries:
            # A stop request is seen when this read returns, within block_ms.
            deliveries = await self._read()
        if deliveries and not self._stop_requested:
            # Reclaim waits for an empty read-ahead: when it is due, this batch reads no further.
            read_ahead = self._batches_are_quick and not reclaim_due
            await self._run_batch(deliveries, read_ahead)
        else:
            self._leases.release(delivery.entry_id for delivery in deliveries)

    async def _still_mine(self, ahead: list[Delivery]) -> list[Delivery]:
        """The tasks read ahead that no other worker has reclaimed while the batch before
        them ran: checked in Redis only when that batch outlasted their hold."""
        ids = [delivery.entry_id for delivery in ahead]
        mine = {entry_id for entry_id in ids if not self._leases.is_lost(entry_id)}
        if time.monotonic() - self._ahead_read_at > self._claim_idle_s:
            try:
                mine &= set(await self._queue.renew(self._consumer, ids))
            except RedisError:
                self._leases.release(ids)
                raise
        if len(mine) < len(ids):
            log.warning(
                "%d task(s) read ahead were reclaimed by other workers", len(ids) - len(mine)
            )
            self._leases.release(entry_id for entry_id in ids if entry_id not in mine)
        return [delivery for delivery in ahead if delivery.entry_id in mine]

    async def _read(
        self, events: list[dict[str, str]] | None = None, block: bool = True
    ) -> list[Delivery]:
        """Read new tasks, acking the finished batch and publishing events in the same trip."""
        finished, self._finished = self._finished, None
        if finished is not None:
            # Their ack goes first in the read's round trip: stop renewing them now, or a
            # renewal while the read blocks would take them for reclaimed.
            self._leases.release(finished.entry_ids)
        try:
            return await self._queue.read(self._consumer, finished, events or [], block)
        except RedisError:
            # Their ack goes again with the next read, unless another worker has reclaimed
            # them by then: a lease now would count the ack, if it did land, as a loss.
            self._finished = finished
            raise

    async def _run_batch(self, deliveries: list[Delivery], read_ahead: bool) -> None:
        """Announce and handle a batch; with read_ahead, the announcement's round trip also
        acks the previous batch and reads the next one, so a busy worker makes one per batch."""
        batch = [delivery.entry_id for delivery in deliveries]
        self._leases.hold(batch)
        done: set[str] = set()
        try:
            runnable = await self._processor.screen(deliveries)
            started = batch_event_fields("ingestion.started", [task for _, task in runnable])
            if read_ahead:
                self._ahead = await self._read(started, block=False)
                self._ahead_read_at = time.monotonic()
                # Held for claim_idle_ms at most: if this batch turns out slow, other
                # workers may reclaim the next one rather than wait for it.
                self._leases.hold(
                    (delivery.entry_id for delivery in self._ahead), for_s=self._claim_idle_s
                )
            else:
                # The batch before this one may be finished and not yet acked.
                await self._ack_finished(started)
            began = time.monotonic()
            self._finished = await self._processor.run(runnable, self._leases, self._should_stop)
            self._batches_are_quick = time.monotonic() - began <= READ_AHEAD_MAX_BATCH_S
            done = set(self._finished.entry_ids)
        finally:
            # What is not done, a batch that a Redis error cut short included, is left for
            # reclaim: renewing it would hide it from every worker until lease_max_ms.
            self._leases.release(entry_id for entry_id in batch if entry_id not in done)

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


async def serve(worker: Worker) -> None:
    """Run a worker with SIGTERM and SIGINT wired to a graceful stop."""

    def request_stop(signum: int, frame: object) -> None:
        worker.stop()

    # A plain signal handler rather than loop.add_signal_handler: a sync task handler blocks
    # the loop, and the stop request must be seen before the next task of the batch starts.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    await worker.run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
        handler = load_handler(settings.task_handler)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    consumer = args.consumer or default_consumer_name()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(Worker(settings, handler, consumer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
