"""A filtered EventSource that has received nothing resumes with no gap after a restart."""

from __future__ import annotations

import signal
import subprocess

import pytest
import redis

from harness.ports import free_port
from harness.redis_server import RedisServer
from tests.support.browser import browser_errors, chromium, wait_in_page
from tests.support.processes import service_env, start_api, wait_until_serving

EVENTS = "shield:events"

OPEN_FILTERED_SOURCE = """
const [url] = arguments;
window.received = [];
window.notices = [];
window.opens = 0;
const source = new EventSource(url);
window.source = source;
source.onopen = () => { window.opens += 1; };
source.addEventListener("other.thing", (message) => {
  window.received.push([message.lastEventId, JSON.parse(message.data).n]);
});
source.addEventListener("notice", (message) => {
  window.notices.push(JSON.parse(message.data).notice);
});
"""


def _start(redis_server: RedisServer, port: int) -> subprocess.Popen[str]:
    process = start_api(service_env(redis_server.url, block_ms=200, sse_ping_s=1), port)
    wait_until_serving(f"http://127.0.0.1:{port}", process)
    return process


def _end(process: subprocess.Popen[str], signum: int) -> str:
    process.send_signal(signum)
    process.wait(timeout=20)
    assert process.stderr is not None
    return process.stderr.read()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_quiet_filtered_page_gets_the_events_added_while_the_service_restarts(
    redis_server: RedisServer, redis_client: redis.Redis, signum: int
) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    redis_client.xadd(EVENTS, {"type": "test.event", "data": '{"n": -1}'})
    process = _start(redis_server, port)
    try:
        with chromium() as browser:
            browser.get(f"{api}/health")
            browser.execute_script(
                OPEN_FILTERED_SOURCE, f"{api}/events/stream?last_id=$&types=other.*"
            )
            wait_in_page(browser, "return window.opens", lambda opens: opens == 1)
            # Unfiltered traffic the page never sees, so its cursor is only the opening's.
            redis_client.xadd(EVENTS, {"type": "test.event", "data": '{"n": -2}'})
            log = _end(process, signum)
            ids = [
                redis_client.xadd(EVENTS, {"type": "other.thing", "data": f'{{"n": {n}}}'})
                for n in range(3)
            ]
            process = _start(redis_server, port)
            received = wait_in_page(
                browser, "return window.received", lambda got: len(got) >= 3, timeout_s=30
            )
            notices = browser.execute_script("return window.notices")
            errors = browser_errors(browser)
    finally:
        _end(process, signal.SIGTERM)
    assert received == [[entry_id, n] for n, entry_id in enumerate(ids)]
    if signum == signal.SIGTERM:
        assert notices == ["shutdown"]
        assert "ASGI callable returned without completing response" not in log, log
        assert not [error for error in errors if "ERR_INCOMPLETE_CHUNKED_ENCODING" in error]
    else:
        assert notices == []
