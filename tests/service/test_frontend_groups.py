"""The front-end groups follow their applications' clients, over WebSocket and AG-UI too, and
moving one costs a bounded count of entries however far behind its clients are. Real API and
redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis
import websockets

from harness.waiting import wait_until
from service.core.redis_client import create_redis
from service.core.settings import Settings
from service.events.frontend_groups import COUNT_LIMIT, FrontEndCursors
from tests.support.agui_input import run_input
from tests.support.agui_stream import agui_run
from tests.support.event_api import ws_url
from tests.support.live_server import http, serve

EVENTS, APP = "shield:events", "power-ui-frontend"


def group(client: redis.Redis, name: str, stream: str = EVENTS) -> dict[str, object]:
    [row] = [row for row in client.xinfo_groups(stream) if row["name"] == name]
    return row


def newest_id(client: redis.Redis, stream: str = EVENTS) -> str:
    [(entry_id, _)] = client.xrevrange(stream, count=1)
    return str(entry_id)


async def test_a_websocket_client_with_app_moves_its_applications_group(
    settings: Settings, redis_client: redis.Redis
) -> None:
    with serve(settings) as base_url, http(base_url) as api:
        async with websockets.connect(ws_url(base_url, f"?last_id=$&app={APP}")) as connection:
            ids = []
            for n in range(4):
                reply = await asyncio.to_thread(
                    api.post, "/events", json={"type": "test.event", "data": {"n": n}}
                )
                ids.append(reply.json()["id"])
            for _ in ids:
                await asyncio.wait_for(connection.recv(), 10)
            await asyncio.to_thread(
                wait_until, lambda: group(redis_client, APP)["last-delivered-id"] == ids[-1], 5
            )
            assert group(redis_client, APP)["lag"] == 0
            assert group(redis_client, "dashboard-frontend")["lag"] == 4
        stats = await asyncio.to_thread(api.get, "/events/stats")
        lags = {row["name"]: row["lag"] for row in stats.json()["streams"][EVENTS]["groups"]}
        assert lags[APP] == 0 and lags["ag-ui-frontend"] == 4
        with pytest.raises(websockets.InvalidStatus) as refusal:
            async with websockets.connect(ws_url(base_url, "?app=metrics-collector")):
                pass
        assert refusal.value.response.status_code == 400


def test_an_agui_run_moves_the_ag_ui_frontend_group(
    settings: Settings, redis_client: redis.Redis
) -> None:
    with serve(settings) as base_url:
        # No worker: the run stays open, streaming what its job has so far.
        with agui_run(base_url, run_input("run-g", "one small document")) as reader:
            assert reader.next()["type"] == "RUN_STARTED"
            queued = newest_id(redis_client)
            wait_until(
                lambda: group(redis_client, "ag-ui-frontend")["last-delivered-id"] == queued, 5
            )
            assert group(redis_client, "ag-ui-frontend")["lag"] == 0
            assert group(redis_client, APP)["lag"] == redis_client.xlen(EVENTS)


@pytest.fixture
async def far_stream(settings: Settings, redis_client: redis.Redis) -> list[str]:
    """An events stream of 4 × COUNT_LIMIT entries and a front-end group at its start."""
    redis_client.delete(EVENTS)
    pipe = redis_client.pipeline()
    for n in range(4 * COUNT_LIMIT):
        pipe.xadd(EVENTS, {"type": "t", "n": str(n)})
    ids = [str(entry_id) for entry_id in pipe.execute()]
    redis_client.xgroup_create(EVENTS, APP, id="0")
    return ids


async def advance(settings: Settings, cursor: str) -> None:
    client = create_redis(settings)
    try:
        await FrontEndCursors(client, EVENTS, lambda: [(APP, cursor)]).advance_once()
    finally:
        await client.aclose()


async def test_a_cursor_far_from_both_ends_moves_with_its_lag_unknown_then_known_again(
    settings: Settings, redis_client: redis.Redis, far_stream: list[str]
) -> None:
    # Far from the head and far from where the group was: more than COUNT_LIMIT both ways.
    await advance(settings, far_stream[2 * COUNT_LIMIT])
    assert group(redis_client, APP)["last-delivered-id"] == far_stream[2 * COUNT_LIMIT]
    assert group(redis_client, APP)["lag"] is None
    # Within COUNT_LIMIT of the head: exact again.
    await advance(settings, far_stream[-10])
    assert group(redis_client, APP)["lag"] == 9


async def test_a_short_move_far_from_the_head_keeps_the_lag_exact(
    settings: Settings, redis_client: redis.Redis, far_stream: list[str]
) -> None:
    # The group's entries-read is known (as a client replaying from the start keeps it).
    redis_client.xgroup_setid(EVENTS, APP, far_stream[9], entries_read=10)
    await advance(settings, far_stream[COUNT_LIMIT])
    # After the cursor: more than COUNT_LIMIT; from the old cursor: fewer. Counted that way.
    assert group(redis_client, APP)["lag"] == len(far_stream) - COUNT_LIMIT - 1
    # Each further step keeps it exact.
    await advance(settings, far_stream[COUNT_LIMIT + 100])
    assert group(redis_client, APP)["lag"] == len(far_stream) - COUNT_LIMIT - 101


async def test_entries_trimmed_after_the_cursor_make_the_lag_unknown_not_wrong(
    settings: Settings, redis_client: redis.Redis, far_stream: list[str]
) -> None:
    redis_client.xgroup_setid(EVENTS, APP, far_stream[9], entries_read=10)
    redis_client.xtrim(EVENTS, minid=far_stream[50], approximate=False)
    assert redis_client.xlen(EVENTS) == len(far_stream) - 50
    await advance(settings, far_stream[COUNT_LIMIT])
    assert group(redis_client, APP)["last-delivered-id"] == far_stream[COUNT_LIMIT]
    assert group(redis_client, APP)["lag"] is None
