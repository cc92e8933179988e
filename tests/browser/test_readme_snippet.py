"""The README's JavaScript snippet, run as written in Chromium on a second origin."""

from __future__ import annotations

import re
import time

import redis

from harness.redis_server import RedisServer
from tests.support.browser import chromium, wait_in_page
from tests.support.live_server import http, serve
from tests.support.processes import REPO_ROOT
from tests.support.service_settings import make_settings

TOKEN = "readme-token"
BASE_LINE = 'const base = "https://shield.example:8000";'


def readme_snippet() -> str:
    blocks = re.findall(r"```js\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    # The browsers section's snippet: the one that names the API's base URL.
    [snippet] = [block for block in blocks if BASE_LINE in block]
    return snippet.replace(BASE_LINE, "const base = window.apiBase;")


def test_readme_snippet_follows_events_with_the_token_over_both_transports(
    foreign_origin: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    settings = make_settings(redis_server, api_token=TOKEN, cors_origins=(foreign_origin,))
    with serve(settings) as api, http(api, TOKEN) as client, chromium() as browser:
        browser.get(foreign_origin)
        browser.execute_script(
            "window.apiBase = arguments[0]; window.token = arguments[1];"
            + readme_snippet()
            + "window.received = []; follow((event) => window.received.push(event.id));"
            + "window.source = source;",
            api,
            TOKEN,
        )
        wait_in_page(browser, "return window.source.readyState === EventSource.OPEN")
        # The socket opens asynchronously and starts at $: publish until it has seen one.
        first = ""
        while not browser.execute_script("return window.received.length"):
            first = client.post("/events", json={"type": "ingestion.completed"}).json()["id"]
            time.sleep(0.1)
        ids = [client.post("/events", json={"type": "ingestion.completed"}).json()["id"]]
        ids += [client.post("/events", json={"type": "other.thing"}).json()["id"]]
        received = wait_in_page(browser, "return window.received", lambda got: ids[-1] in got)
        last_seen = wait_in_page(
            browser,
            "return sessionStorage.getItem('shield.lastId')",
            lambda value: value == ids[0],
        )
    assert received[-2:] == ids
    assert first in received
    assert last_seen == ids[0]
