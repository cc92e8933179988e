"""AG-UI: ``POST /agui/ingest`` admits a RunAgentInput's document as a job and streams the run.

A run that ingests admits its document through admit_job, the code of POST /jobs: all chunks
or none, job id = runId. A run whose ``resume`` answers the interrupts of an earlier run on its
thread requeues (retry) or drops (skip) each dead letter, then streams the thread's job.

Everything that can refuse the request (bad input, a runId of another document, the queue's
backpressure, Redis) happens before the response starts, so it is an HTTP error with a reason;
once streaming, the only failure left is losing the event feed, which ends the run with
RUN_ERROR telling the client to POST again to re-attach.

The stream opens from the job state, read in one MULTI with the events stream's last id, and
the live part (the process's one fan-out reader, filtered to the job) starts after that id:
nothing is missed or shown twice, and the events stream is never folded from its start. A
re-POST with Last-Event-ID rebuilds the view at that frame from the job state and the window
of events after it, and sends only the frames that follow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from ag_ui.core import BaseEvent, Interrupt, RunAgentInput
from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from service.agui.frame_ids import FrameId, Framer, parse_frame_id
from service.agui.job_snapshot import JobSnapshot, seed_before, seed_of
from service.agui.run_plan import (
    IngestRefused,
    is_resume,
    parse_run_input,
    plan_ingest,
    plan_resume,
)
from service.agui.run_store import RunConflict, RunStore
from service.agui.run_view import (
    JobEvent,
    RunProgress,
    dead_letter_interrupt,
    encode_frames,
    interrupted,
    job_event_from_ws,
)
from service.api.app_state import AppState, State
from service.api.auth import CurrentGrant
from service.api.sse_response import event_stream_response
from service.api.stream_shutdown import closed_on_shutdown
from service.api.trace_header import Traceparent
from service.core import names
from service.core.grants import Grant
from service.events.bus import SubscriptionClosed
from service.events.filters import EventFilter
from service.events.stream_ids import is_after
from service.jobs.errors import JobConflict, JobNotFound
from service.jobs.job_admission import admit_job
from service.jobs.job_context import JobKeys

router = APIRouter(prefix="/agui", tags=["agui"])

LAST_EVENT_ID_HEADER = "last-event-id"

# The body is read and validated by the route itself (pydantic's JSON parser, see
# service.agui.run_plan); the schema here only documents it.
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "An AG-UI RunAgentInput; the last user message is the "
                    "document, forwardedProps may carry source_uri, source_type, metadata. "
                    'With resume, each entry answers a dead-letter interrupt: payload {"action": '
                    '"retry"} requeues it, {"action": "skip"} or status "cancelled" drops it.',
                }
            }
        },
    }
}


def run_store(state: AppState) -> RunStore:
    return RunStore(state.redis, JobKeys.of(state.settings), state.settings.dead_letter_stream)


@router.post("/ingest", response_class=EventSourceResponse, openapi_extra=_BODY_DOC)
async def ingest(
    request: Request, state: State, grant: CurrentGrant, traceparent: Traceparent
) -> EventSourceResponse:
    """Admit the document as job runId (or answer the thread's interrupts), then stream the
    run as AG-UI events.

    The job is the run's: a token limited to some jobs may run, resume and re-attach to only
    those jobs' runs. Each chunk admitted by this request keeps its traceparent.
    """
    run_input = parse_run_input(await request.body())
    last_event_id = request.headers.get(LAST_EVENT_ID_HEADER)
    seen_through = parse_frame_id(last_event_id) if last_event_id else None
    runs = run_store(state)
    if is_resume(run_input):
        job_id = await _resume(state, runs, run_input, grant)
    else:
        job_id = await _ingest(state, runs, run_input, grant, traceparent)
    snapshot = await runs.snapshot(job_id)
    if snapshot is None:
        raise RunConflict(f"the job {job_id!r} of run {run_input.run_id!r} has expired")
    framer = Framer(seen_through)
    progress, opening = await _opening(runs, run_input, snapshot, framer, grant)
    return event_stream_response(
        lambda shutdown: _run_frames(
            state, runs, job_id, progress, framer, opening, snapshot.cursor, grant, shutdown
        ),
        ping_s=state.settings.sse_ping_s,
    )


async def _ingest(
    state: AppState, runs: RunStore, run_input: RunAgentInput, grant: Grant, traceparent: str
) -> str:
    """Admit the run's document as job runId, once: a re-POST finds it admitted."""
    plan = plan_ingest(run_input)
    grant.check_job(plan.run_id)
    record = await runs.open(plan.run_id, plan.run_id, plan.digest)
    if record.created or not await _job_exists(state, plan.run_id):
        try:
            await admit_job(
                state.queue,
                state.settings.max_job_chunks,
                plan.run_id,
                plan.chunk_specs(),
                source_uri=plan.source_uri,
                source_type=plan.source_type,
                metadata=plan.metadata,
                traceparent=traceparent,
            )
        except JobConflict:
            # Another POST of the same run admitted it first, or the id is a job of another
            # kind: only the first is this run's.
            job = await state.jobs.get(plan.run_id)
            chunk_ids = tuple(chunk.chunk_id for chunk in job.chunks or [])
            if not job.total_known or chunk_ids != plan.chunk_ids:
                raise RunConflict(
                    f"runId {plan.run_id!r} is a job that was not made by this run"
                ) from None
    await runs.remember_thread(plan.thread_id, plan.run_id)
    return plan.run_id


async def _resume(state: AppState, runs: RunStore, run_input: RunAgentInput, grant: Grant) -> str:
    """Answer the dead letters of the thread's job; the run then shows that job."""
    plan = plan_resume(run_input)
    # Its runId names a run record too: a limited token may not take one outside its jobs.
    grant.check_job(plan.run_id)
    job_id = await runs.thread_job(plan.thread_id)
    if job_id is None:
        raise RunConflict(f"thread {plan.thread_id!r} has no run whose interrupts to resume")
    grant.check_job(job_id)
    # A re-POST of the run keeps to the job it resumed, though the thread moved on since.
    job_id = (await runs.open(plan.run_id, job_id, plan.digest)).job_id
    grant.check_job(job_id)
    await runs.answer(job_id, plan.answers, state.queue)
    return job_id


async def _job_exists(state: AppState, job_id: str) -> bool:
    try:
        await state.jobs.get(job_id, with_chunks=False)
    except JobNotFound:
        return False
    return True


async def _opening(
    runs: RunStore,
    run_input: RunAgentInput,
    snapshot: JobSnapshot,
    framer: Framer,
    grant: Grant,
) -> tuple[RunProgress, list[tuple[str, BaseEvent]]]:
    """The run's view at the snapshot and the frames that open the stream: a whole opening,
    or, after a Last-Event-ID, the frames the client has not had."""
    thread_id, run_id = run_input.thread_id, run_input.run_id
    seen_through = framer.seen_through
    continuing = seen_through is not None and not _trimmed(snapshot, seen_through)
    if seen_through is None or not continuing:
        progress = RunProgress(thread_id, run_id, seed_of(snapshot))
        return progress, framer.frames(snapshot.cursor, progress.opening(), opening=True)
    if is_after(seen_through.cursor, snapshot.cursor):
        raise IngestRefused(f"Last-Event-ID {seen_through.text()!r} is past the events stream")
    window = [
        (entry_id, event)
        for entry_id, event in await runs.window(
            snapshot.job_id, seen_through.cursor, snapshot.cursor, not seen_through.opening
        )
        if grant.may_see_type(event.type)
    ]
    progress = RunProgress(thread_id, run_id, seed_before(snapshot, [event for _, event in window]))
    frames: list[tuple[str, BaseEvent]] = []
    if seen_through.opening:
        frames += framer.frames(seen_through.cursor, progress.opening(), opening=True)
    for entry_id, event in window:
        frames += framer.frames(entry_id, progress.apply(event))
    return progress, frames


def _trimmed(snapshot: JobSnapshot, seen_through: FrameId) -> bool:
    """The events after the client's frame are no longer all in the stream."""
    return snapshot.oldest is not None and is_after(snapshot.oldest, seen_through.cursor)


async def _interrupts(runs: RunStore, job_id: str, progress: RunProgress) -> list[Interrupt]:
    """One interrupt per dead-lettered chunk whose dead letter still waits for an answer."""
    if progress.cancelled or not progress.failed_chunks:
        return []
    snapshot = await runs.snapshot(job_id)
    if snapshot is None:
        return []
    failed = [
        chunk for chunk in snapshot.chunks if chunk.state == "failed" and chunk.dead_letter_id
    ]
    waiting = await runs.waiting_dead_letters([chunk.dead_letter_id for chunk in failed])
    return [
        dead_letter_interrupt(chunk.dead_letter_id, chunk.chunk_id, chunk.error)
        for chunk in failed
        if chunk.dead_letter_id in waiting
    ]


async def _run_frames(
    state: AppState,
    runs: RunStore,
    job_id: str,
    progress: RunProgress,
    framer: Framer,
    opening: list[tuple[str, BaseEvent]],
    cursor: str,
    grant: Grant,
    shutdown: anyio.Event,
) -> AsyncIterator[bytes]:
    clients = state.metrics.connected_clients.labels("agui")
    clients.inc()
    try:
        if opening:
            yield encode_frames(opening)
        if progress.ended:
            closing = progress.closing(await _interrupts(runs, job_id, progress))
            yield encode_frames(framer.more(closing, cursor))
            return
        job_only = EventFilter(job_id=job_id, allowed_jobs=grant.jobs, allowed_types=grant.types)
        async with (
            state.hub.subscribe(cursor, job_only, names.AGUI_FRONTEND_GROUP) as subscription,
            closed_on_shutdown(shutdown, subscription),
        ):
            try:
                async for batch in subscription.batches():
                    frames: list[tuple[str, BaseEvent]] = []
                    for encoded in batch:
                        event: JobEvent = job_event_from_ws(encoded.ws)
                        frames += framer.frames(encoded.entry_id, progress.apply(event))
                        if progress.ended:
                            closing = progress.closing(await _interrupts(runs, job_id, progress))
                            frames += framer.frames(encoded.entry_id, closing)
                            break
                    if frames:
                        yield encode_frames(frames)
                    if progress.ended:
                        return
            except SubscriptionClosed as closed:
                yield encode_frames(framer.more([interrupted(str(closed))], cursor))
    finally:
        clients.dec()
