"""What the routes share for the life of the app, built by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, WebSocket
from redis.asyncio import Redis

from service.core.instruments import ServiceMetrics
from service.core.settings import Settings
from service.events.bus import EventHub, EventPublisher
from service.events.frontend_groups import FrontEndCursors
from service.jobs.job_store import JobStore
from service.tasks.task_queue import TaskQueue


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    redis: Redis
    hub_reader: Redis
    replay_redis: Redis
    hub: EventHub
    publisher: EventPublisher
    queue: TaskQueue
    metrics: ServiceMetrics
    front_end_groups: FrontEndCursors
    jobs: JobStore


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.shield
    return state


def get_ws_state(websocket: WebSocket) -> AppState:
    state: AppState = websocket.app.state.shield
    return state


State = Annotated[AppState, Depends(get_state)]
WsState = Annotated[AppState, Depends(get_ws_state)]
