"""AG-UI: ``POST /agui/ingest`` takes a RunAgentInput, enqueues its document and streams the run.

Everything that can refuse the request (bad input, a runId of another document, the queue's
backpressure, Redis) happens before the response starts, so it is an HTTP error with a reason;
once streaming, the only failure left is losing the event feed, which ends the run with
RUN_ERROR telling the client to POST again to re-attach.

The live part rides the process's one fan-out reader (EventHub), filtered to the job. The state
so far is folded from the job's history, read from the run's start cursor up to the stream's
end at attach time; the subscription then starts after that end, so nothing is missed or shown
twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from service.agui.run_plan import IngestPlan, parse_run_input, plan_ingest
from service.agui.run_store import RunRecord, RunStore, job_history
from service.agui.run_view import RunProgress, encode_events, interrupted, job_event_from_ws
from service.api.app_state import AppState, State
from service.api.auth import CurrentGrant
from service.api.sse_response import event_stream_response
from service.api.stream_shutdown import closed_on_shutdown
from service.api.trace_header import Traceparent
from service.core import names
from service.core.grants import Grant
from service.events.bus import SubscriptionClosed
from service.events.filters import EventFilter
from service.events.stream_ids import ONLY_NEW
from service.tasks.task_format import Task
from service.tasks.task_queue import TaskQueue

router = APIRouter(prefix="/agui", tags=["agui"])

# The body is read and validated by the route itself (pydantic's JSON parser, see
# service.agui_plan); the schema here only documents it.
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "An AG-UI RunAgentInput; the last user message is the "
                    "document, forwardedProps may carry source_uri, source_type, metadata.",
                }
            }
        },
    }
}


async def enqueue_chunk(queue: TaskQueue, task: Task) -> str:
    """The one call into the task queue, so its limits and backpressure apply unchanged."""
    return await queue.enqueue(task)


@router.post("/ingest", response_class=EventSourceResponse, openapi_extra=_BODY_DOC)
async def ingest(
    request: Request, state: State, grant: CurrentGrant, traceparent: Traceparent
) -> EventSourceResponse:
    """Enqueue the document as tasks of job runId, then stream the run as AG-UI events.

    The runId is the job: a token limited to some jobs may run (and re-attach to) only those.
    Each chunk enqueued by this request keeps its traceparent.
    """
    plan = plan_ingest(parse_run_input(await request.body()))
    grant.check_job(plan.run_id)
    # Taken before anything is enqueued: every event of the job comes after it.
    start = (await state.hub.resolve_start(ONLY_NEW)).cursor
    runs = RunStore(state.redis)

    async def enqueue(task: Task) -> str:
        if traceparent:
            task = dataclasses.replace(task, traceparent=traceparent)
        return await enqueue_chunk(state.queue, task)

    # A refusal (a conflict, a full backlog) is answered by http_errors. The chunks enqueued
    # before a full backlog are recorded: a retry of the same runId adds the rest.
    record = await runs.open(plan, start)
    record = await runs.enqueue_missing(plan, record, enqueue)
    progress, attached_at = await _fold_history(state, plan, record, grant)
    return event_stream_response(
        lambda shutdown: _run_frames(state, progress, attached_at, grant, shutdown),
        ping_s=state.settings.sse_ping_s,
    )


async def _fold_history(
    state: AppState, plan: IngestPlan, record: RunRecord, grant: Grant
) -> tuple[RunProgress, str]:
    """The run's state from its start to the stream's end now, and that end: the live feed's
    cursor, so an event is either folded here or delivered live, never both or neither."""
    progress = RunProgress(plan.thread_id, plan.run_id, record.chunk_ids, record.message_chunks)
    attached_at = (await state.hub.resolve_start(ONLY_NEW)).cursor
    stream = state.settings.stream_events
    async for event in job_history(state.redis, stream, plan.run_id, record.start, attached_at):
        if grant.may_see_type(event.type):
            progress.apply(event)
    return progress, attached_at


async def _run_frames(
    state: AppState, progress: RunProgress, cursor: str, grant: Grant, shutdown: anyio.Event
) -> AsyncIterator[bytes]:
    clients = state.metrics.connected_clients.labels("agui")
    clients.inc()
    try:
        yield encode_events(progress.opening())
        if progress.settled:
            yield encode_events([progress.closing()])
            return
        job_only = EventFilter(
            job_id=progress.run_id, allowed_jobs=grant.jobs, allowed_types=grant.types
        )
        async with (
            state.hub.subscribe(cursor, job_only, names.AGUI_FRONTEND_GROUP) as subscription,
            closed_on_shutdown(shutdown, subscription),
        ):
            try:
                async for batch in subscription.batches():
                    shown = []
                    for encoded in batch:
                        shown += progress.apply(job_event_from_ws(encoded.ws))
                        if progress.settled:
                            shown.append(progress.closing())
                            break
                    if shown:
                        yield encode_events(shown)
                    if progress.settled:
                        return
            except SubscriptionClosed as closed:
                yield encode_events([interrupted(str(closed))])
    finally:
        clients.dec()
