"""The dashboard in real Chromium, against a real API, worker and redis-server, with a token."""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis
from selenium.webdriver.common.by import By

from harness.redis_server import RedisServer
from tests.browser.handlers import CURED_KEY, HANDLED_KEY
from tests.support.browser import chromium, wait_in_page
from tests.support.live_server import http, serve
from tests.support.processes import WorkerProcesses, service_env
from tests.support.service_settings import make_settings

TOKEN = "dashboard-secret-token"
QUEUE = "shield:ingestion_queue"
# Set it to keep the screenshot, e.g. SHIELD_DASHBOARD_SCREENSHOT=docs/dashboard.png.
SCREENSHOT_ENV = "SHIELD_DASHBOARD_SCREENSHOT"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STREAM_CELL = """
const row = document.querySelector(`#streams tr[data-stream="${arguments[0]}"]`);
return row ? row.cells[arguments[1]].textContent : null;
"""
RATE = """
const rate = document.querySelector(`#rates li[data-stream="${arguments[0]}"] .rate`);
return rate ? parseFloat(rate.textContent) || 0 : 0;
"""
GROUP_CONSUMERS = """
const row = document.querySelector(`#groups tr[data-group="${arguments[0]}"]`);
return row ? Number(row.cells[2].textContent) : 0;
"""
TAIL_TYPES = "return [...document.querySelectorAll('#tail tbody tr')].map(r => r.dataset.type)"
DEAD_LETTER_CHUNKS = """
return [...document.querySelectorAll('#dead-letters tbody tr')].map(r => r.cells[2].textContent);
"""
REQUESTED_URLS = "return performance.getEntriesByType('resource').map(e => e.name)"
WAITING_RETRIES = "return document.getElementById('waiting-retries').textContent"


def dashboard_worker_env(redis_server: RedisServer) -> dict[str, str]:
    return service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        retry_attempts=1,
        task_handler="tests.browser.handlers:fail_poison_until_cured",
    )


def test_dashboard_shows_live_numbers_tails_events_and_requeues_a_dead_letter(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    workers: WorkerProcesses,
    tmp_path: Path,
) -> None:
    workers.start(dashboard_worker_env(redis_server), consumer="dashboard-worker")
    settings = make_settings(redis_server, api_token=TOKEN, retry_attempts=1)
    with serve(settings) as api, http(api, TOKEN) as client, chromium() as browser:
        browser.get(f"{api}/")
        assert browser.current_url == f"{api}/dashboard"
        wait_in_page(browser, "return !document.getElementById('token-panel').hidden")
        browser.find_element(By.ID, "token-input").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_in_page(browser, "return document.getElementById('token-panel').hidden")
        added_before = int(
            wait_in_page(
                browser,
                STREAM_CELL,
                lambda cell: bool(cell and cell.isdigit()),
                arguments=(QUEUE, 2),
            )
        )

        # Tasks in a few bursts, so the rate chart has a shape; one of them is poison.
        for burst in range(4):
            for index in range(5):
                content = "poison" if (burst, index) == (1, 2) else "fine"
                task = {
                    "job_id": "demo-job",
                    "chunk_id": f"chunk-{burst}-{index}",
                    "content": content,
                }
                assert client.post("/tasks", json=task).status_code == 201
            client.post("/events", json={"type": "dashboard.demo", "data": {"burst": burst}})
            time.sleep(1.5)

        wait_in_page(
            browser, STREAM_CELL, lambda cell: cell == str(added_before + 20), arguments=(QUEUE, 2)
        )
        assert wait_in_page(browser, RATE, lambda rate: rate > 0, arguments=(QUEUE,)) > 0
        wait_in_page(browser, TAIL_TYPES, lambda types: "dashboard.demo" in types)
        wait_in_page(browser, TAIL_TYPES, lambda types: "ingestion.completed" in types)
        wait_in_page(browser, DEAD_LETTER_CHUNKS, lambda chunks: chunks == ["chunk-1-2"])
        wait_in_page(
            browser,
            GROUP_CONSUMERS,
            lambda count: count >= 1,
            arguments=(f"{QUEUE}/lightrag-workers",),
        )

        screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes().startswith(PNG_MAGIC)

        # The type filter restarts the tail with ?types=, so other types stop showing.
        types_input = browser.find_element(By.ID, "tail-types")
        types_input.send_keys("dashboard.*")
        browser.find_element(By.CSS_SELECTOR, "#tail-form button").click()
        wait_in_page(browser, TAIL_TYPES, lambda types: types == [])
        wait_in_page(
            browser,
            "return document.getElementById('tail-status').textContent",
            lambda text: "dashboard.*" in text,
        )
        client.post("/events", json={"type": "other.thing"})
        client.post("/events", json={"type": "dashboard.after"})
        assert wait_in_page(browser, TAIL_TYPES, bool) == ["dashboard.after"]

        # Requeue: the handler is cured first, so the requeued task runs to completion.
        redis_client.set(CURED_KEY, "1")
        [dead_id] = [entry_id for entry_id, _ in redis_client.xrange(f"{QUEUE}:dlq")]
        browser.find_element(By.CSS_SELECTOR, f'button.requeue[data-id="{dead_id}"]').click()
        wait_in_page(
            browser,
            "return document.getElementById('dead-letter-message').textContent",
            lambda text: text.startswith(f"requeued {dead_id} as task "),
        )
        wait_in_page(browser, DEAD_LETTER_CHUNKS, lambda chunks: chunks == [])
        assert redis_client.xlen(f"{QUEUE}:dlq") == 0
        assert "chunk-1-2" in redis_client.lrange(HANDLED_KEY, 0, -1)

        urls = browser.execute_script(REQUESTED_URLS)
        assert any("/events/stream" in url for url in urls)
        assert not any(TOKEN in url for url in urls)
        assert browser.execute_script("return sessionStorage.getItem('shield.apiToken')") == TOKEN

        # A notice (event "notice") is shown, and the tail resumes from its id afterwards.
        # Down for longer than the clients' retries with backoff (about 2 s) ride through.
        redis_server.restart(down_s=4)
        wait_in_page(
            browser,
            "return document.getElementById('tail-status').title",
            lambda text: text.startswith("last notice: redis unavailable"),
        )
        assert client.post("/events", json={"type": "dashboard.again"}).status_code == 201
        wait_in_page(browser, TAIL_TYPES, lambda types: types[:1] == ["dashboard.again"])


def test_dashboard_shows_how_many_tasks_wait_for_their_retry(
    redis_server: RedisServer, redis_client: redis.Redis, workers: WorkerProcesses
) -> None:
    # Each poison task's failed first attempt waits 30-60 s for its retry.
    env = service_env(
        redis_server.url,
        block_ms=200,
        task_handler="tests.browser.handlers:fail_poison_until_cured",
        retry_backoff_ms=60_000,
        retry_backoff_max_ms=60_000,
    )
    workers.start(env, consumer="waiting-worker")
    with serve(make_settings(redis_server)) as api, http(api) as client, chromium() as browser:
        browser.get(f"{api}/dashboard")
        wait_in_page(browser, WAITING_RETRIES, lambda text: text == "0 waiting for a retry")
        for index, content in enumerate(["poison", "fine", "poison"]):
            task = {"job_id": "waiting-job", "chunk_id": f"w{index}", "content": content}
            assert client.post("/tasks", json=task).status_code == 201
        wait_in_page(browser, WAITING_RETRIES, lambda text: text == "2 waiting for a retry")
        assert redis_client.zcard(f"{QUEUE}:delayed") == 2
        assert redis_client.lrange(HANDLED_KEY, 0, -1) == ["w1"]
