"""The event bus: publishing, backend group consumers, and the per-process fan-out hub.

Live clients do not use consumer groups. A group hands each entry to one consumer, which is how
the original design split events between its SSE clients. Instead one hub per process reads the
stream with plain XREAD, encodes each entry once, and offers it to every subscription.

A subscription starts by replaying history with XRANGE, page by page. Only when it has caught
up does it join the hub, and then it reads once more to cover the entries that arrived in
between. The hub may hand it some of those too; entries at or before the subscription's cursor
are dropped, so the client sees every entry once, in order. A client resuming from an id
older than the oldest entry still held is told so (StartPoint.gap), and an id the stream never
reached is refused.

Reading history is bounded (service.events.history): pages, and the hub's own reads, are
sized in bytes; a few pages at most are read at once per process, over a Redis client of
their own; and the read after joining is served from the events the hub encoded last.

Entries are foreign input: one that cannot be served (service.events.UnreadableEntry) is
skipped, logged and counted, live and in replay alike. The reader task is supervised: any
failure closes the subscriptions with their resume ids, and it restarts with backoff;
``reader_running`` is false meanwhile, so health can say so.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from service.core.freed_memory import FreedMemory
from service.core.idempotency import IDEMPOTENCY_PRELUDE, IdempotentWrite, replayed_result
from service.core.lua import LuaScript
from service.core.redis_replies import Entry, entries, first_stream_entries, xadd_fields
from service.events.errors import EventError
from service.events.filters import EventFilter
from service.events.history import (
    DEFAULT_REPLAY_LIMITS,
    RECENT_HISTORY_BYTES,
    RecentHistory,
    ReplayLimits,
    entry_bytes,
    next_page_size,
)
from service.events.stream_ids import (
    FIRST_ID,
    StartPoint,
    StreamBounds,
    is_after,
    plan_start,
)
from service.events.wire import EncodedEvent, Event, NoticeKind, UnreadableEntry, encode_for_clients

log = logging.getLogger(__name__)

RECONNECT_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0)
# A transport copies what it is handed, once per client (SSE joins and frames it, the socket
# buffers what the client has not read). Handing a client at most this much at a time keeps
# those copies small however far behind it is: 400 clients each handed a 500-event backlog
# at once grew the process by hundreds of MiB that the allocator kept.
HANDOUT_BYTES = 16 * 1024


class SubscriptionClosed(EventError):
    """The hub dropped a subscription; the message says why, ``kind`` for the client."""

    def __init__(self, message: str, kind: NoticeKind) -> None:
        super().__init__(message)
        self.kind = kind


async def last_entry_id(redis: Redis, stream: str) -> str:
    """Id of the newest entry of a stream, or 0-0 when it is empty or missing."""
    newest = entries(await redis.xrevrange(stream, count=1))
    return newest[0][0] if newest else FIRST_ID


async def read_bounds(redis: Redis, stream: str) -> StreamBounds:
    """The stream's first id held, last id generated and count of removed entries."""
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError as error:
        if "no such key" in str(error).lower():
            return StreamBounds()
        raise
    first_entry = info.get("first-entry")
    added = int(info.get("entries-added") or 0)
    return StreamBounds(
        first_id=str(first_entry[0]) if first_entry else None,
        last_generated_id=str(info.get("last-generated-id") or FIRST_ID),
        entries_removed=max(0, added - int(info.get("length") or 0)),
    )


def _take_up_to(events: deque[EncodedEvent], limit_bytes: int) -> list[EncodedEvent]:
    """Pop events from the left while they fit in limit_bytes; at least one."""
    taken = [events.popleft()]
    size = len(taken[0].sse)
    while events and size + len(events[0].sse) <= limit_bytes:
        size += len(events[0].sse)
        taken.append(events.popleft())
    return taken


def _encode_readable(
    read: list[Entry], on_unreadable: Callable[[str, UnreadableEntry], None]
) -> list[EncodedEvent]:
    batch = []
    for entry_id, fields in read:
        try:
            batch.append(encode_for_clients(entry_id, fields))
        except UnreadableEntry as error:
            on_unreadable(entry_id, error)
    return batch


class EventPublisher:
    """Writes events to the events stream with approximate trimming."""

    def __init__(
        self, redis: Redis, stream: str, maxlen: int, idempotency_ttl_s: int = 24 * 3600
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._maxlen = maxlen
        self._idempotency_ttl_s = idempotency_ttl_s
        self._publish_once = LuaScript(
            redis, "service.events", "publish_once", (IDEMPOTENCY_PRELUDE,)
        )

    async def publish(self, event: Event) -> str:
        """XADD one event and return its entry id."""
        entry_id = await self._redis.xadd(
            self._stream, xadd_fields(event.to_fields()), maxlen=self._maxlen, approximate=True
        )
        return str(entry_id)

    async def publish_once(self, event: Event, write: IdempotentWrite) -> tuple[str, str, bool]:
        """XADD one event under an Idempotency-Key: its entry id and event_id, and True when
        this is the replay of the key's first request (nothing written, the first event's
        ids); IdempotencyKeyReused for a key used with another body."""
        args: list[str | int | float] = [self._maxlen, write.request_hash]
        args += [
            self._idempotency_ttl_s,
            *[item for pair in event.to_fields().items() for item in pair],
        ]
        reply = list(await self._publish_once([self._stream, write.record_key], args))
        replayed = replayed_result(reply)
        result = replayed or reply
        return str(result[1]), str(result[2]), replayed is not None


class GroupEventConsumer:
    """A backend consumer of the events stream: XREADGROUP in its group, XACK when handled."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        consumer: str,
        batch_size: int,
        block_ms: int,
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._batch_size = batch_size
        self._block_ms = block_ms

    async def read(self) -> list[tuple[str, Event]]:
        """New events for this consumer; unreadable entries are logged and acked, not returned."""
        reply = await self._redis.xreadgroup(
            self._group,
            self._consumer,
            {self._stream: ">"},
            count=self._batch_size,
            block=self._block_ms,
        )
        events: list[tuple[str, Event]] = []
        unreadable: list[str] = []
        for entry_id, fields in first_stream_entries(reply):
            try:
                events.append((entry_id, Event.from_fields(fields)))
            except UnreadableEntry as error:
                log.warning("group %s skips event entry %s: %s", self._group, entry_id, error)
                unreadable.append(entry_id)
        await self.ack(unreadable)
        return events

    async def ack(self, entry_ids: list[str]) -> int:
        """Acknowledge handled events in one command."""
        if not entry_ids:
            return 0
        acked: int = await self._redis.xack(self._stream, self._group, *entry_ids)
        return acked


STOP_TIMEOUT_S = 5.0


async def stop_task(task: asyncio.Task[None], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel a background loop and wait for it, a bounded time: redis-py can swallow a
    cancellation inside a command, and a shutdown must not hang on it."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("%s did not stop within %.0fs; left behind", task.get_name(), timeout_s)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r", task.get_name(), task.exception())


class Subscription:
    """One live client's view of the stream: replay, then a bounded buffer fed by the hub."""

    def __init__(
        self,
        hub: EventHub,
        cursor: str,
        event_filter: EventFilter,
        limit: int,
        limit_bytes: int,
        app: str | None = None,
    ) -> None:
        self._hub = hub
        # The front-end application this client said it is, whose group follows its cursor.
        self.app = app
        self._filter = event_filter
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._buffer: deque[EncodedEvent] = deque()
        self._buffered_bytes = 0
        self._wakeup = asyncio.Event()
        self._caught_up = False
        self._live = False
        self.cursor = cursor
        self.closed_reason: str | None = None
        self.closed_kind = NoticeKind.SLOW_CLIENT
        self._idle_timer: asyncio.TimerHandle | None = None
        self.replay_from_recent = False
        self._idle_due = False
        self._last_handout_s = 0.0

    def offer(self, batch: list[EncodedEvent], batch_bytes: int) -> None:
        """Called by the hub with each batch it read and its size; never blocks."""
        if self.closed_reason is not None:
            return
        if (
            self._filter.passes_everything
            and len(self._buffer) + len(batch) <= self._limit
            and self._buffered_bytes + batch_bytes <= self._limit_bytes
        ):
            # The common case in one step: no filter, and the whole batch fits.
            self._buffer.extend(batch)
            self._buffered_bytes += batch_bytes
        else:
            self._offer_each(batch)
        if self._buffer:
            self._wakeup.set()
        elif self._live and is_after(batch[-1].entry_id, self.cursor):
            # Nothing here was for this client and nothing is waiting: it has everything up
            # to the batch's end, so a quiet, filtered client can be told a newer resume id.
            self.cursor = batch[-1].entry_id

    def _offer_each(self, batch: list[EncodedEvent]) -> None:
        for event in batch:
            if not self._filter.accepts(event):
                continue
            if len(self._buffer) >= self._limit:
                self.close(
                    f"client too slow: {self._limit} events buffered", NoticeKind.SLOW_CLIENT
                )
                return
            size = len(event.sse)
            # One event always fits, however large, so a big entry cannot block a client.
            if self._buffer and self._buffered_bytes + size > self._limit_bytes:
                self.close(
                    f"client too slow: over {self._limit_bytes} bytes buffered",
                    NoticeKind.SLOW_CLIENT,
                )
                return
            self._buffer.append(event)
            self._buffered_bytes += size

    def close(self, reason: str, kind: NoticeKind) -> None:
        """Stop the subscription after what is already buffered has been sent."""
        if self.closed_reason is None:
            self.closed_reason = reason
            self.closed_kind = kind
        self._wakeup.set()

    async def batches(self, idle_s: float | None = None) -> AsyncIterator[list[EncodedEvent]]:
        """Every event after the cursor that passes the filter, in order, batch by batch.

        With idle_s, an empty batch after each idle_s without events: everything up to the
        cursor has then been handed out, so the transport may announce it. Ends with
        SubscriptionClosed, whether the hub dropped it or a replay lost Redis, so a transport
        has one way to tell its client where to resume.
        """
        try:
            async for batch in self._hub.replay(self, self.replay_from_recent):
                yield batch
            self._hub.join(self)
            async for batch in self._hub.replay(self, from_recent=True):
                yield batch
        except RedisError as error:
            raise SubscriptionClosed(
                f"redis unavailable: {error}", NoticeKind.REDIS_UNAVAILABLE
            ) from error
        self._live = True
        loop = asyncio.get_running_loop()
        if idle_s is not None:
            self._last_handout_s = loop.time()
            self._idle_timer = loop.call_later(idle_s, self._check_idle, loop, idle_s)
        # Inline, not a generator of its own: each layer of async generator costs about a
        # microsecond per handout, and a process hands out 100,000 a second.
        while True:
            if self._buffer:
                batch = self._drain()
                if batch:
                    self.cursor = batch[-1].entry_id
                    self._last_handout_s = loop.time()
                    yield batch
                continue
            if self.closed_reason is not None:
                raise SubscriptionClosed(self.closed_reason, self.closed_kind)
            if self._idle_due:
                self._idle_due = False
                yield []
                continue
            self._wakeup.clear()
            await self._wakeup.wait()

    def stop_idle_timer(self) -> None:
        """Called when the client's connection ends: the idle timer must not outlive it."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _check_idle(self, loop: asyncio.AbstractEventLoop, idle_s: float) -> None:
        # One timer per idle period, not one per wait: a wait_for or a timeout scope around
        # every wait costs more than the handout it guards when a client gets 100 a second.
        quiet_s = loop.time() - self._last_handout_s
        if quiet_s >= idle_s:
            self._idle_due = True
            self._last_handout_s = loop.time()
            self._wakeup.set()
            quiet_s = 0.0
        self._idle_timer = loop.call_later(idle_s - quiet_s, self._check_idle, loop, idle_s)

    def accepts(self, event: EncodedEvent) -> bool:
        return self._filter.accepts(event)

    def _drain(self) -> list[EncodedEvent]:
        if self._buffered_bytes <= HANDOUT_BYTES:
            batch = list(self._buffer)
            self._buffer.clear()
            self._buffered_bytes = 0
        else:
            batch = _take_up_to(self._buffer, HANDOUT_BYTES)
            self._buffered_bytes -= sum(len(event.sse) for event in batch)
        if self._caught_up:
            return batch
        # The hub may have handed over entries that the catch-up replay already sent.
        fresh = [event for event in batch if is_after(event.entry_id, self.cursor)]
        self._caught_up = bool(fresh)
        return fresh


class EventHub:
    """Reads the events stream once for the whole process and fans entries out."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        read_count: int,
        block_ms: int,
        buffer_limit: int,
        buffer_limit_bytes: int,
        reader: Redis | None = None,
        on_unreadable: Callable[[], None] = lambda: None,
        on_reader_failure: Callable[[], None] = lambda: None,
        restart_delays_s: Sequence[float] = RECONNECT_DELAYS_S,
        replay_limits: ReplayLimits = DEFAULT_REPLAY_LIMITS,
    ) -> None:
        # redis serves replays and start points only: a client of its own (its own pool),
        # so clients catching up never take the connections that writes need.
        self._redis = redis
        self._reader = reader or redis
        self._replay_limits = replay_limits
        self._replay_slots = asyncio.Semaphore(replay_limits.concurrency)
        self._stream = stream
        self._read_count = read_count
        self._block_ms = block_ms
        self._buffer_limit = buffer_limit
        self._buffer_limit_bytes = buffer_limit_bytes
        self._count_unreadable = on_unreadable
        self._count_reader_failure = on_reader_failure
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._cursor: str | None = None
        self._recent = RecentHistory(RECENT_HISTORY_BYTES)
        self._last_read_size = (0, 0)
        self._freed_memory = FreedMemory()
        self._restart_delays_s = tuple(restart_delays_s)
        self._backing_off = False

    @property
    def reader_running(self) -> bool:
        """True while the reader task is alive and not waiting out a failure."""
        return self._task is not None and not self._task.done() and not self._backing_off

    async def start(self) -> None:
        """Start the reader task."""
        self._task = asyncio.create_task(self._read_forever(), name="event-hub-reader")

    async def stop(self) -> None:
        """Stop reading and close every subscription."""
        self._stopping = True
        if self._task is not None:
            await stop_task(self._task)
        self._close_all("server shutting down", NoticeKind.SHUTDOWN)

    async def resolve_start(self, resume_point: str) -> StartPoint:
        """Where a subscription starts for a normalized resume point (0, $ or an id).

        Raises InvalidStreamId for an id the stream has not reached.
        """
        async with self._replay_slots:
            bounds = await read_bounds(self._redis, self._stream)
        return plan_start(resume_point, bounds)

    @asynccontextmanager
    async def subscribe(
        self,
        cursor: str,
        event_filter: EventFilter,
        app: str | None = None,
        replay_from_recent: bool = False,
    ) -> AsyncIterator[Subscription]:
        """A subscription for one client connection, after a cursor from resolve_start.

        With replay_from_recent (a start point without a gap), its replay may be served
        from the hub's recent history: entries trimmed in Redis since the start was resolved
        are then still sent, never a gap the client was not told of.
        """
        subscription = Subscription(
            self, cursor, event_filter, self._buffer_limit, self._buffer_limit_bytes, app
        )
        subscription.replay_from_recent = replay_from_recent
        try:
            yield subscription
        finally:
            subscription.stop_idle_timer()
            self._subscriptions.discard(subscription)
            # What a client held (its replay pages, its buffer) goes back to the OS, not
            # only to the heap, so a burst of clients does not leave the process bigger.
            self._freed_memory.release()

    def sent_cursors(self) -> list[tuple[str | None, str]]:
        """Each live subscription's application and how far it has been sent."""
        return [(subscription.app, subscription.cursor) for subscription in self._subscriptions]

    def join(self, subscription: Subscription) -> None:
        """Start handing live batches to a subscription that has caught up."""
        self._subscriptions.add(subscription)

    async def replay(
        self, subscription: Subscription, from_recent: bool = False
    ) -> AsyncIterator[list[EncodedEvent]]:
        """Entries after the subscription's cursor until the end, read with XRANGE in pages
        bounded in bytes, each read and encoded while holding one of the process's replay
        slots; or, from_recent, from the hub's recent history when it holds them all.

        A resume point after a gap is answered from Redis, so entries the client was told
        are gone are not served from memory.

        Handouts are full (HANDOUT_BYTES) until the last: what is left of a page waits for
        the next, so small first pages do not become small sends.
        """
        entries_read, bytes_read = 0, 0
        wanted: deque[EncodedEvent] = deque()
        wanted_bytes = 0
        reached_end = False
        # The subscription's cursor moves only with what was handed out, so a replay that
        # loses Redis with events still waiting here tells its client to resume before them.
        read_through = subscription.cursor
        while not reached_end:
            recent = self._recent.after(read_through) if from_recent else None
            if recent is not None:
                # Already read and encoded by the hub: no Redis, no slot, no encoding.
                (batch, read_through), reached_end = recent, True
            else:
                page_size = next_page_size(
                    self._read_count, self._replay_limits.page_bytes, entries_read, bytes_read
                )
                async with self._replay_slots:
                    page = entries(
                        await self._redis.xrange(
                            self._stream, min=f"({read_through}", max="+", count=page_size
                        )
                    )
                    batch = _encode_readable(page, self._skip)
                if not page:
                    break
                entries_read += len(page)
                bytes_read += sum(entry_bytes(entry) for entry in page)
                reached_end = len(page) < page_size
                read_through = page[-1][0]
                # Let go of the page's raw entries before the client is waited on.
                del page
            for event in batch:
                if subscription.accepts(event):
                    wanted.append(event)
                    wanted_bytes += len(event.sse)
            del batch
            while wanted_bytes >= HANDOUT_BYTES:
                handout = _take_up_to(wanted, HANDOUT_BYTES)
                wanted_bytes -= sum(len(event.sse) for event in handout)
                subscription.cursor = handout[-1].entry_id
                yield handout
        while wanted:
            handout = _take_up_to(wanted, HANDOUT_BYTES)
            subscription.cursor = handout[-1].entry_id
            yield handout
        # Entries the filter left out are behind the client too.
        subscription.cursor = read_through

    async def _read_forever(self) -> None:
        failures = 0
        # Not `while True`: a cancellation that lands inside a redis-py command can come out
        # as a RedisError, and the loop must still end once stop() was asked.
        while not self._stopping:
            try:
                await self._read_once()
                failures = 0
                continue
            except RedisError as error:
                if self._stopping:
                    return
                log.warning("event hub lost Redis: %s", error)
                self._close_all(f"redis unavailable: {error}", NoticeKind.REDIS_UNAVAILABLE)
            except Exception:
                # Whatever it was, the live feed must not die with it. Each client is told
                # where it stopped and resumes from there, so no entry is lost to it.
                log.exception("event hub reader failed; restarting it")
                self._count_reader_failure()
                self._close_all("event fan-out restarting", NoticeKind.RESTARTING)
            delay = self._restart_delays_s[min(failures, len(self._restart_delays_s) - 1)]
            failures += 1
            self._backing_off = True
            try:
                await asyncio.sleep(delay)
            finally:
                self._backing_off = False

    async def _read_once(self) -> None:
        if self._cursor is None:
            self._cursor = await last_entry_id(self._reader, self._stream)
        # Sized in bytes like a replay page, from the entries of the last read: 500 entries
        # of 65 KB, encoded three ways, grew the process by hundreds of MiB it then kept.
        count = next_page_size(
            self._read_count, self._replay_limits.page_bytes, *self._last_read_size
        )
        reply = await self._reader.xread(
            {self._stream: self._cursor}, count=count, block=self._block_ms
        )
        read = first_stream_entries(reply)
        if not read:
            return
        self._last_read_size = (len(read), sum(entry_bytes(entry) for entry in read))
        batch = _encode_readable(read, self._skip)
        self._cursor = read[-1][0]
        self._recent.extend(batch, self._cursor)
        if not batch:
            return
        batch_bytes = sum(len(event.sse) for event in batch)
        for subscription in list(self._subscriptions):
            subscription.offer(batch, batch_bytes)
            if subscription.closed_reason is not None:
                self._subscriptions.discard(subscription)

    def _skip(self, entry_id: str, error: UnreadableEntry) -> None:
        log.warning("skipping event entry %s of %s: %s", entry_id, self._stream, error)
        self._count_unreadable()

    def _close_all(self, reason: str, kind: NoticeKind) -> None:
        for subscription in self._subscriptions:
            subscription.close(reason, kind)
        self._subscriptions.clear()
