"""A page on another origin uses the API from real Chromium: CORS for HTTP, Origin for WS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import redis
from selenium import webdriver

from harness.redis_server import RedisServer
from tests.support.browser import chromium, wait_in_page
from tests.support.live_server import http, serve
from tests.support.service_settings import make_settings

TOKEN = "browser-token"
EVENT_COUNT = 50

OPEN_EVENT_SOURCE = """
const [url] = arguments;
window.received = [];
window.sourceState = "connecting";
window.drops = 0;
const source = new EventSource(url);
window.source = source;
source.onopen = () => { window.sourceState = "open"; };
source.onerror = () => {
  window.drops += 1;
  window.sourceState = source.readyState === EventSource.CLOSED ? "closed" : "retrying";
};
source.addEventListener("browser.tick", (message) => {
  window.received.push([message.lastEventId, JSON.parse(message.data).n]);
});
"""

CROSS_ORIGIN_POST = """
const [url, token, done] = arguments;
fetch(url, {
  method: "POST",
  headers: {"Content-Type": "application/json", "Authorization": `Bearer ${token}`},
  body: JSON.stringify({type: "browser.posted", data: {from: location.origin}}),
}).then(
  async (reply) => done({status: reply.status, body: await reply.json()}),
  (error) => done({error: String(error)}),
);
"""

OPEN_WEBSOCKET = """
const [url, done] = arguments;
const socket = new WebSocket(url);
socket.onopen = () => { socket.close(); done("open"); };
socket.onclose = (closed) => done(`closed before open (${closed.code})`);
"""


@contextmanager
def api_and_browser(
    redis_server: RedisServer, **overrides: object
) -> Iterator[tuple[str, webdriver.Chrome]]:
    """The API with these settings, and a browser that leaves before the API stops."""
    with serve(make_settings(redis_server, **overrides)) as base_url, chromium() as browser:
        yield base_url, browser


def test_page_on_listed_origin_receives_50_events_in_order_over_event_source(
    foreign_origin: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    with api_and_browser(redis_server, cors_origins=(foreign_origin,)) as (api, browser):
        browser.get(foreign_origin)
        browser.execute_script(OPEN_EVENT_SOURCE, f"{api}/events/stream?last_id=$")
        wait_in_page(browser, "return window.sourceState", lambda state: state == "open")
        with http(api) as client:
            ids = [
                client.post("/events", json={"type": "browser.tick", "data": {"n": n}}).json()["id"]
                for n in range(EVENT_COUNT)
            ]
        received = wait_in_page(
            browser, "return window.received", lambda got: len(got) >= EVENT_COUNT
        )
    assert received == [[entry_id, n] for n, entry_id in enumerate(ids)]


def test_page_on_unlisted_origin_is_refused_by_the_browser(
    foreign_origin: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    with api_and_browser(redis_server) as (api, browser):
        browser.get(foreign_origin)
        browser.execute_script(OPEN_EVENT_SOURCE, f"{api}/events/stream?last_id=0")
        # CLOSED, not retrying: the browser failed the connection for CORS, for good.
        wait_in_page(browser, "return window.sourceState", lambda state: state == "closed")
        with http(api) as client:
            client.post("/events", json={"type": "browser.tick", "data": {"n": 0}})
        assert browser.execute_script("return window.received") == []


def test_cross_origin_post_with_token_passes_the_preflight(
    foreign_origin: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    with api_and_browser(redis_server, cors_origins=(foreign_origin,), api_token=TOKEN) as (
        api,
        browser,
    ):
        browser.get(foreign_origin)
        reply = browser.execute_async_script(CROSS_ORIGIN_POST, f"{api}/events", TOKEN)
    assert reply["status"] == 201, reply
    [(_, fields)] = redis_client.xrange("shield:events", reply["body"]["id"], reply["body"]["id"])
    assert fields["type"] == "browser.posted"
    assert foreign_origin in fields["data"]


def test_cross_origin_post_fails_its_preflight_without_cors(
    foreign_origin: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    with api_and_browser(redis_server, api_token=TOKEN) as (api, browser):
        browser.get(foreign_origin)
        reply = browser.execute_async_script(CROSS_ORIGIN_POST, f"{api}/events", TOKEN)
    assert "error" in reply, reply
    assert redis_client.xlen("shield:events") == 0


def test_websocket_opens_from_a_listed_origin_only(
    foreign_origin: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    with api_and_browser(redis_server) as (api, browser):
        ws_url = api.replace("http://", "ws://") + "/events/ws?last_id=$"
        browser.get(foreign_origin)
        refused = browser.execute_async_script(OPEN_WEBSOCKET, ws_url)
        browser.get(f"{api}/dashboard")
        same_origin = browser.execute_async_script(OPEN_WEBSOCKET, ws_url)
    with api_and_browser(redis_server, cors_origins=(foreign_origin,)) as (api, browser):
        ws_url = api.replace("http://", "ws://") + "/events/ws?last_id=$"
        browser.get(foreign_origin)
        listed = browser.execute_async_script(OPEN_WEBSOCKET, ws_url)
    assert refused.startswith("closed before open")
    assert same_origin == "open"
    assert listed == "open"


def publish_retrying(client: httpx.Client, n: int) -> str:
    """POST one tick, retrying the 503s of a service whose Redis has just come back."""
    for _ in range(20):
        reply = client.post("/events", json={"type": "browser.tick", "data": {"n": n}})
        if reply.status_code != 503:
            break
        time.sleep(0.1)
    assert reply.status_code == 201, reply.text
    entry_id: str = reply.json()["id"]
    return entry_id


def test_page_on_listed_origin_resumes_with_last_event_id_after_the_stream_drops(
    foreign_origin: str, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with api_and_browser(redis_server, cors_origins=(foreign_origin,)) as (api, browser):
        browser.get(foreign_origin)
        browser.execute_script(OPEN_EVENT_SOURCE, f"{api}/events/stream?last_id=$")
        wait_in_page(browser, "return window.sourceState", lambda state: state == "open")
        with http(api) as client:
            ids = [
                client.post("/events", json={"type": "browser.tick", "data": {"n": n}}).json()["id"]
                for n in range(10)
            ]
            wait_in_page(browser, "return window.received.length", lambda count: count == 10)
            # The service ends every stream when Redis goes; the browser reconnects on its
            # own, cross-origin, sending Last-Event-ID, and must get the CORS headers again.
            # Down for several of its reconnects (retry: 1000 ms): each gets an event stream
            # with a notice, not a 503, which would end the EventSource for good.
            redis_server.restart(down_s=4)
            # Counted, not polled for: restart() returns once Redis is back, and by then the
            # page may have reconnected, its "retrying" state already over.
            wait_in_page(browser, "return window.drops", lambda drops: drops >= 1)
            assert wait_in_page(browser, "return window.sourceState", bool) != "closed"
            ids += [publish_retrying(client, n) for n in range(10, 20)]
            received = wait_in_page(
                browser, "return window.received", lambda got: len(got) >= 20, timeout_s=30
            )
    assert received == [[entry_id, n] for n, entry_id in enumerate(ids)]
