"""Event routes: publish, live SSE and WebSocket streams, and stream stats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse
from starlette.responses import JSONResponse, Response

from service.api.app_state import AppState, State, WsState
from service.api.auth import CurrentGrant, deny_websocket
from service.api.http_errors import domain_answer
from service.api.idempotent_answers import IdempotencyKey, created, idempotent_write
from service.api.origins import refuse_foreign_origin
from service.api.send_watchdog import SendWatchdog
from service.api.sse_response import event_stream_response
from service.api.stream_shutdown import closed_on_shutdown
from service.core.grants import AccessDenied, Grant
from service.core.identifiers import MaybeEmptyIdentifier
from service.core.json_safety import JsonSafeModel
from service.core.stream_probe import read_stream_infos
from service.core.stream_stats import fold_stats
from service.events.bus import Subscription, SubscriptionClosed
from service.events.collector import read_collected
from service.events.filters import EventFilter, TooManyPatterns
from service.events.frontend_groups import UnknownApplication, application
from service.events.stream_ids import InvalidStreamId, StartPoint, normalize_resume_point
from service.events.wire import (
    EVENT_TYPE_PATTERN,
    Event,
    NoticeKind,
    encode_sse_cursor,
    encode_sse_gap,
    encode_sse_notice,
    encode_sse_opening,
    encode_ws_batch,
    encode_ws_gap,
    encode_ws_notice,
    utc_now_iso,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/events", tags=["events"])

# How a send fails when the client has just gone: starlette raises RuntimeError for a send
# after the close, the transport an OSError.
CLIENT_GONE = (WebSocketDisconnect, RuntimeError, OSError)
# The slow-client notice is queued behind what a stuck client has not read; a send of it
# that still waits after this long is given up, and the socket closed.
NOTICE_SEND_S = 1.0

ResumeQuery = Annotated[
    str | None,
    Query(description="0 for everything retained, an entry id, or $ for new only"),
]
TypesQuery = Annotated[str | None, Query(description="comma-separated types; a.* matches a prefix")]
JobQuery = Annotated[str | None, Query(description="only events of this job")]
AppQuery = Annotated[
    str | None,
    Query(description="the front-end application this client is (its events group follows it)"),
]
UnnamedQuery = Annotated[
    bool,
    Query(description="frames without an event line, type inside data, for one onmessage"),
]
BatchQuery = Annotated[
    bool, Query(description="each message is a JSON array of the events queued at once")
]


class EventIn(JsonSafeModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=200)
    job_id: MaybeEmptyIdentifier | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class EventCreated(BaseModel):
    id: str
    event_id: str


@router.post("", status_code=201, response_model=EventCreated)
async def publish_event(
    body: EventIn, state: State, grant: CurrentGrant, idempotency_key: IdempotencyKey = None
) -> Response:
    """Append one event to the events stream; the service's own types need an admin token."""
    grant.check_event_write(body.type, body.job_id or "")
    write = idempotent_write("POST /events", idempotency_key, body)
    event = Event(type=body.type, job_id=body.job_id or "", data=body.data, metadata=body.metadata)
    with state.metrics.redis_latency.time():
        if write is None:
            entry_id, event_id = await state.publisher.publish(event), event.event_id
            replayed = False
        else:
            entry_id, event_id, replayed = await state.publisher.publish_once(event, write)
    if not replayed:
        state.metrics.events_published.inc()
    return created(EventCreated(id=entry_id, event_id=event_id), replayed)


@router.get("/stats")
async def stream_stats(state: State, grant: CurrentGrant) -> dict[str, Any]:
    """Length, ends and consumer groups of both streams, the dead-letter count, and the tasks
    waiting for a retry. A token limited to jobs or types gets no entry contents."""
    settings = state.settings
    infos = await read_stream_infos(
        state.redis, [settings.stream_ingestion, settings.stream_events]
    )
    dead_letters = await state.queue.dead_letter_count()
    waiting = await state.queue.waiting_count()
    stats = fold_stats(infos, dead_letters, waiting, utc_now_iso())
    stats["collected"] = await read_collected(state.redis)
    return without_entries(stats) if grant.limited else stats


def without_entries(stats: dict[str, Any]) -> dict[str, Any]:
    """The stats with each stream's first and last entry (task and event contents) and the
    collector's counts by event type left out."""
    streams = {
        name: {**stream, "first_entry_detail": None, "last_entry_detail": None}
        for name, stream in stats["streams"].items()
    }
    return {**stats, "streams": streams, "collected": None}


def client_filter(types: str | None, job_id: str | None, grant: Grant) -> EventFilter:
    """The client's filter within its grant; a job_id outside the grant is a 403."""
    if job_id and not grant.may_use_job(job_id):
        raise AccessDenied(f"this token does not cover job {job_id!r}")
    return EventFilter.parse(types, job_id, grant)


async def _sse_frames(
    state: AppState,
    start: StartPoint,
    event_filter: EventFilter,
    unnamed: bool,
    shutdown: anyio.Event,
    front_end: str | None = None,
) -> AsyncIterator[bytes]:
    delivered = state.metrics.events_delivered.labels("sse")
    clients = state.metrics.connected_clients.labels("sse")
    clients.inc()
    try:
        # Before anything else, so a client that receives nothing still resumes from here.
        yield encode_sse_opening(start.cursor)
        if start.gap:
            yield encode_sse_gap(start.cursor, start.first_held_id)
        announced = start.cursor
        idle_s = state.settings.sse_ping_s
        async with (
            state.hub.subscribe(
                start.cursor, event_filter, front_end, replay_from_recent=not start.gap
            ) as subscription,
            closed_on_shutdown(shutdown, subscription),
        ):
            try:
                async for batch in subscription.batches(idle_s):
                    if not batch:
                        # Idle: a filtered client whose cursor moved past entries it does not
                        # want resumes from there, not from before them.
                        if subscription.cursor != announced:
                            announced = subscription.cursor
                            yield encode_sse_cursor(announced)
                        continue
                    announced = batch[-1].entry_id
                    delivered.inc(len(batch))
                    if unnamed:
                        yield b"".join(event.sse_unnamed for event in batch)
                    else:
                        yield b"".join(event.sse for event in batch)
            except SubscriptionClosed as closed:
                yield encode_sse_notice(closed.kind, str(closed), subscription.cursor)
    finally:
        clients.dec()


async def _unavailable_frames(resume_point: str, error: RedisError) -> AsyncIterator[bytes]:
    yield encode_sse_opening(resume_point)
    yield encode_sse_notice(
        NoticeKind.REDIS_UNAVAILABLE, f"redis unavailable: {error}", resume_point
    )


@router.get("/stream", response_class=EventSourceResponse)
async def stream_events(
    state: State,
    grant: CurrentGrant,
    last_id: ResumeQuery = None,
    types: TypesQuery = None,
    job_id: JobQuery = None,
    unnamed: UnnamedQuery = False,
    app: AppQuery = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Server-sent events: every event after the resume point that passes the filters.

    The stream opens with ``retry:`` and an ``id:`` at the resume point. A resume point older
    than the oldest entry still held is followed by a ``gap`` notice that names the first id
    held; an id the stream has not reached is a 400. The stream ends with a notice (slow
    client, Redis lost or unreachable at the start, shutdown) whose id is where to resume.
    """
    resume_point = normalize_resume_point(last_event_id if last_event_id is not None else last_id)
    event_filter = client_filter(types, job_id, grant)
    front_end = application(app, state.settings)
    try:
        start = await state.hub.resolve_start(resume_point)
    except RedisError as error:
        # A browser's EventSource gives up for good on any answer but an event stream; this
        # one says why and sends it back, after retry:, to the same resume point.
        unavailable = _unavailable_frames(resume_point, error)
        return event_stream_response(lambda _: unavailable)
    return event_stream_response(
        lambda shutdown: _sse_frames(state, start, event_filter, unnamed, shutdown, front_end),
        ping_s=state.settings.sse_ping_s,
    )


class WebSocketSendTimeout(Exception):
    """A client did not take a message within the send timeout; ``resume_from`` is the id
    after which nothing is known to have reached it."""

    def __init__(self, timeout_s: float, resume_from: str) -> None:
        super().__init__(f"client too slow: a message was not taken within {timeout_s:g}s")
        self.resume_from = resume_from


async def _ws_send_events(
    websocket: WebSocket,
    state: AppState,
    subscription: Subscription,
    start: StartPoint,
    batched: bool,
) -> None:
    delivered = state.metrics.events_delivered.labels("ws")
    timeout_s = state.settings.ws_send_timeout_s
    # The id of the last event whose send completed: where a client cut off resumes.
    sent_through = start.cursor
    # This sender runs in a task of its own: a send stuck past the timeout cancels it, and
    # the cancel is taken back (uncancel) and turned into WebSocketSendTimeout below.
    sender = asyncio.current_task()
    if sender is None:
        raise RuntimeError("the WebSocket sender must run in an asyncio task")
    watchdog = SendWatchdog(timeout_s, lambda: sender.cancel())

    async def send_text(message: str) -> None:
        watchdog.began()
        try:
            await websocket.send_text(message)
        except asyncio.CancelledError:
            if not watchdog.fired:
                raise
            sender.uncancel()
            raise WebSocketSendTimeout(timeout_s, sent_through) from None
        finally:
            watchdog.ended()

    async def send_one(message: str) -> None:
        # A batching client gets arrays only, notices included: one shape to parse.
        await send_text(encode_ws_batch([message]) if batched else message)

    watchdog.start()
    try:
        if start.gap:
            await send_one(encode_ws_gap(start.cursor, start.first_held_id))
        try:
            async for batch in subscription.batches():
                if batched:
                    # One frame and one send per handout instead of one per event: the
                    # per-message cost, not the bytes, is what saturates a process.
                    await send_text(encode_ws_batch([event.ws for event in batch]))
                    sent_through = batch[-1].entry_id
                else:
                    for event in batch:
                        await send_text(event.ws)
                        sent_through = event.entry_id
                delivered.inc(len(batch))
        except SubscriptionClosed as closed:
            await send_one(encode_ws_notice(closed.kind, str(closed), subscription.cursor))
    except WebSocketSendTimeout as stuck:
        await _send_last_notice(websocket, batched, stuck)
    finally:
        watchdog.stop()
    await _close_within(websocket, timeout_s)


async def _send_last_notice(
    websocket: WebSocket, batched: bool, stuck: WebSocketSendTimeout
) -> None:
    """Queue the slow-client notice behind what the client has not read, without waiting
    for it to be taken: the client sees it if it ever reads on, and resumes from its id."""
    notice = encode_ws_notice(NoticeKind.SLOW_CLIENT, str(stuck), stuck.resume_from)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(NOTICE_SEND_S):
            await websocket.send_text(encode_ws_batch([notice]) if batched else notice)


async def _close_within(websocket: WebSocket, timeout_s: float) -> None:
    # A client that reads nothing may not answer the close either; the server then drops it.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await websocket.close(code=1011)


async def _cancel_until_done(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel the tasks, again until they end: redis-py can swallow a cancel that lands in a
    command (a replay's read), and the sender would then wait for events forever, holding
    the connection of a client that left and the server's graceful shutdown with it."""
    while tasks:
        for task in tasks:
            task.cancel()
        _, tasks = await asyncio.wait(tasks, timeout=0.1)


async def _ws_wait_for_disconnect(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


@router.websocket("/ws")
async def websocket_events(
    websocket: WebSocket,
    state: WsState,
    grant: CurrentGrant,
    last_id: ResumeQuery = None,
    types: TypesQuery = None,
    job_id: JobQuery = None,
    batch: BatchQuery = False,
    app: AppQuery = None,
) -> None:
    """The same stream as /events/stream, one JSON object per message (an array with batch)."""
    settings = state.settings
    if await refuse_foreign_origin(websocket, settings.cors_origins, settings.server_names):
        return
    try:
        event_filter = client_filter(types, job_id, grant)
        front_end = application(app, state.settings)
        start = await state.hub.resolve_start(normalize_resume_point(last_id))
    except (InvalidStreamId, TooManyPatterns, AccessDenied, UnknownApplication) as error:
        denial = domain_answer(error)
        await deny_websocket(websocket.scope, websocket.receive, websocket.send, denial)
        return
    except RedisError as error:
        denial = JSONResponse({"detail": f"redis unavailable: {error}"}, status_code=503)
        await deny_websocket(websocket.scope, websocket.receive, websocket.send, denial)
        return
    await websocket.accept()
    clients = state.metrics.connected_clients.labels("ws")
    clients.inc()
    try:
        async with state.hub.subscribe(
            start.cursor, event_filter, front_end, replay_from_recent=not start.gap
        ) as subscription:
            sender = asyncio.create_task(
                _ws_send_events(websocket, state, subscription, start, batch)
            )
            watcher = asyncio.create_task(_ws_wait_for_disconnect(websocket))
            done, pending = await asyncio.wait(
                {sender, watcher}, return_when=asyncio.FIRST_COMPLETED
            )
            await _cancel_until_done(pending)
            for task in done:
                failure = task.exception()
                if isinstance(failure, CLIENT_GONE):
                    # A send raced the client's departure; nothing was lost but the client.
                    log.debug("websocket client left: %r", failure)
                elif failure is not None:
                    log.warning("websocket client ended with %r", failure)
    finally:
        clients.dec()
