"""The original design's SSE endpoint, rebuilt as a baseline.

Every SSE client joins one shared consumer group and runs its own XREADGROUP loop (COUNT 10,
BLOCK 5000). A group hands each entry to one consumer, so the clients split the events
between them instead of each receiving all of them: the bug this project fixes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

STREAM = "shield:events"
GROUP = "sse-clients"


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    redis = Redis.from_url(
        os.environ["SHIELD_REDIS_URL"], decode_responses=True, max_connections=4096
    )
    try:
        await redis.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    except ResponseError:
        pass
    app.state.redis = redis
    yield
    await redis.aclose()


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def stream(request: Request) -> StreamingResponse:
    redis: Redis = request.app.state.redis
    consumer = f"sse-{uuid.uuid4().hex[:8]}"

    async def frames() -> AsyncIterator[bytes]:
        while True:
            reply = await redis.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=10, block=5000)
            if not reply:
                continue
            out = []
            for entry_id, fields in reply[0][1]:
                data = json.loads(fields.get("data") or "{}")
                payload = {
                    "event_id": fields.get("event_id", ""),
                    "job_id": fields.get("job_id", ""),
                }
                payload.update(data)
                event_type = fields.get("type", "message")
                out.append(f"event: {event_type}\nid: {entry_id}\ndata: {json.dumps(payload)}\n\n")
                await redis.xack(STREAM, GROUP, entry_id)
            yield "".join(out).encode()

    return StreamingResponse(frames(), media_type="text/event-stream")


app = Starlette(
    routes=[Route("/health", health), Route("/events/stream", stream)], lifespan=lifespan
)
