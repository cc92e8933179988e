"""Ending event streams on server shutdown with sse-starlette's cooperative hook.

On SIGTERM sse-starlette sets each response's ``shutdown_event``, waits up to its grace
period, then cancels the stream. Cancelled, a stream never sends its last chunk: uvicorn logs
"ASGI callable returned without completing response" and a browser sees
ERR_INCOMPLETE_CHUNKED_ENCODING. So each stream closes its subscription when the event is
set, says so in its own terms (a notice, a RUN_ERROR) and returns within the grace period.
The hub's own stop() is no help here: it runs in the lifespan shutdown, after uvicorn has
waited for the connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from service.events.bus import Subscription
from service.events.wire import NoticeKind

# Well under systemd's stop timeout; a stream only needs to send what it has buffered.
SHUTDOWN_GRACE_S = 3.0


async def _close_when_set(shutdown: anyio.Event, subscription: Subscription) -> None:
    await shutdown.wait()
    subscription.close("server shutting down", NoticeKind.SHUTDOWN)


@asynccontextmanager
async def closed_on_shutdown(
    shutdown: anyio.Event, subscription: Subscription
) -> AsyncIterator[None]:
    """Close the subscription (it then ends with SubscriptionClosed) once shutdown is set."""
    watcher = asyncio.create_task(_close_when_set(shutdown, subscription))
    try:
        yield
    finally:
        watcher.cancel()
