"""The app factory and its lifespan; ``uvicorn service.main:app`` serves the result."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import SecretStr
from redis.exceptions import RedisError

from service.api import (
    agui_routes,
    dashboard_routes,
    event_routes,
    health_routes,
    job_routes,
    metrics_routes,
    task_routes,
    token_routes,
)
from service.api.app_state import AppState
from service.api.auth import BearerAuth, Credentials, redact_logs
from service.api.body_limit import BodySizeLimit
from service.api.http_errors import install_error_handlers
from service.api.json_body import JsonBodyOnly
from service.api.origins import add_cors
from service.core.consumer_groups import ensure_all_groups
from service.core.instruments import ServiceMetrics
from service.core.redis_client import create_redis
from service.core.settings import ConfigError, Settings, load_settings
from service.core.tokens import TokenAuthority
from service.events.bus import EventHub, EventPublisher
from service.events.frontend_groups import FrontEndCursors
from service.events.history import ReplayLimits
from service.jobs.job_store import JobStore
from service.tasks.task_queue import TaskQueue

log = logging.getLogger(__name__)

# The hub reads more than a worker batch at once: it serves every client of the process.
FANOUT_READ_COUNT = 500


def build_state(settings: Settings) -> AppState:
    """Wire the Redis client into the publisher, the queue and the fan-out hub."""
    redis = create_redis(settings)
    # The hub's blocking XREAD gets a connection of its own, so a burst of clients
    # replaying history can neither starve it nor be starved by it.
    hub_reader = create_redis(settings, max_connections=1)
    # Replays get a pool of their own, one connection per replay slot: 300 clients catching
    # up at once then wait for a slot instead of taking every connection POST /tasks needs.
    replay_redis = create_redis(settings, max_connections=settings.replay_concurrency)
    metrics_ = ServiceMetrics()
    hub = EventHub(
        replay_redis,
        settings.stream_events,
        reader=hub_reader,
        read_count=max(FANOUT_READ_COUNT, settings.batch_size),
        block_ms=settings.block_ms,
        buffer_limit=settings.client_buffer_events,
        buffer_limit_bytes=settings.client_buffer_bytes,
        on_unreadable=metrics_.event_entries_skipped.inc,
        on_reader_failure=metrics_.fanout_reader_failures.inc,
        replay_limits=ReplayLimits(settings.replay_page_bytes, settings.replay_concurrency),
    )
    metrics_.fanout_reader_up.set_function(lambda: float(hub.reader_running))
    return AppState(
        settings=settings,
        redis=redis,
        hub_reader=hub_reader,
        replay_redis=replay_redis,
        hub=hub,
        publisher=EventPublisher(
            redis, settings.stream_events, settings.stream_maxlen, settings.idempotency_ttl_s
        ),
        queue=TaskQueue(redis, settings),
        metrics=metrics_,
        front_end_groups=FrontEndCursors(redis, settings.stream_events, hub.sent_cursors),
        jobs=JobStore(redis, settings),
    )


def secret_value(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def token_authority(settings: Settings) -> TokenAuthority | None:
    """The JWT minter and verifier, when a secret or a public key is configured."""
    if settings.jwt_secret is None and settings.jwt_public_key is None:
        return None
    return TokenAuthority(
        settings.jwt_audience, secret_value(settings.jwt_secret), settings.jwt_public_key
    )


def credentials(settings: Settings, authority: TokenAuthority | None) -> Credentials | None:
    """What a caller may present, or None when the API is configured with no token at all."""
    if not settings.auth_configured:
        return None
    return Credentials(secret_value(settings.api_token), authority)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; settings default to the environment."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)
        app.state.shield = state
        try:
            await ensure_all_groups(state.redis, settings)
        except RedisError as error:
            # The service must come up without Redis and recover when it returns.
            log.warning("could not create consumer groups at start: %s", error)
        await state.hub.start()
        await state.front_end_groups.start()
        try:
            yield
        finally:
            await state.front_end_groups.stop()
            await state.hub.stop()
            await state.hub_reader.aclose()
            await state.replay_redis.aclose()
            await state.redis.aclose()

    app = FastAPI(title="Shield orchestrator", version="1.0.0", lifespan=lifespan)
    routers = (
        event_routes.router,
        task_routes.router,
        job_routes.router,
        agui_routes.router,
        health_routes.router,
        metrics_routes.router,
        dashboard_routes.router,
    )
    for router in routers:
        app.include_router(router)
    authority = token_authority(settings)
    app.state.token_authority = authority
    if authority is not None and authority.can_mint:
        # Only where there is a secret to sign with: otherwise there is no such route.
        app.include_router(token_routes.router)
    install_error_handlers(app)
    # Outermost last: CORS, then auth (401/403), then the body size (413), then JSON only (415).
    app.add_middleware(JsonBodyOnly)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_event_bytes,
        max_bytes_by_route={("POST", "/jobs"): settings.max_job_bytes},
    )
    app.add_middleware(BearerAuth, credentials=credentials(settings, authority))
    redact_logs(secret_value(settings.api_token), secret_value(settings.jwt_secret))
    add_cors(app, settings.cors_origins)
    return app


def _app_from_environment() -> FastAPI:
    try:
        return create_app()
    except ConfigError as error:
        sys.exit(f"config error: {error}")


app = _app_from_environment()
