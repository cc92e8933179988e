"""The dashboard's jobs list in real Chromium: a job's progress shows, and Cancel cancels it."""

from __future__ import annotations

import redis
from selenium.webdriver.common.by import By

from harness.redis_server import RedisServer
from tests.service.job_handlers import HOLD_MARK
from tests.support.browser import chromium, wait_in_page
from tests.support.live_server import http, serve
from tests.support.processes import WorkerProcesses, service_env
from tests.support.service_settings import make_settings

TOKEN = "dashboard-jobs-token"
JOB_ROW = """
const row = document.querySelector(`#jobs tr[data-job="${arguments[0]}"]`);
return row ? [row.dataset.state, row.cells[3].textContent, row.cells[2].textContent] : null;
"""
JOBS_POLLS = """
return performance.getEntriesByType('resource').filter(e => e.name.includes('/jobs?limit=')).length
"""


def jobs_worker_env(redis_server: RedisServer) -> dict[str, str]:
    return service_env(
        redis_server.url,
        block_ms=200,
        claim_idle_ms=400,
        worker_concurrency=1,
        batch_size=1,
        task_handler="tests.service.job_handlers:hold_until_cancelled",
    )


def test_dashboard_lists_jobs_with_progress_and_cancels_one(
    redis_server: RedisServer, redis_client: redis.Redis, workers: WorkerProcesses
) -> None:
    workers.start(jobs_worker_env(redis_server), consumer="dashboard-jobs-worker")
    settings = make_settings(redis_server, api_token=TOKEN)
    chunks = [{"chunk_id": f"c{i}", "content": "x"} for i in range(3)]
    held = [*chunks, {"chunk_id": "held", "content": HOLD_MARK}]
    with serve(settings) as api, http(api, TOKEN) as client, chromium() as browser:
        assert client.post("/jobs", json={"job_id": "quick", "chunks": chunks}).status_code == 201
        assert client.post("/jobs", json={"job_id": "held", "chunks": held}).status_code == 201
        browser.get(f"{api}/dashboard")
        wait_in_page(browser, "return !document.getElementById('token-panel').hidden")
        browser.find_element(By.ID, "token-input").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        quick = wait_in_page(
            browser, JOB_ROW, lambda r: bool(r) and r[0] == "done", arguments=("quick",)
        )
        assert quick[1] == "3" and "3/3" in quick[2]
        # The held job's fourth chunk runs until it is cancelled: 3 done, then stuck.
        wait_in_page(browser, JOB_ROW, lambda r: bool(r) and r[1] == "3", arguments=("held",))
        button = browser.find_element(By.CSS_SELECTOR, '#jobs tr[data-job="held"] button.cancel')
        # Polls that find the row unchanged keep its button: the one found before them still
        # takes the click, as a user's would.
        polls = browser.execute_script(JOBS_POLLS)
        wait_in_page(browser, JOBS_POLLS, lambda count: count >= polls + 2)
        button.click()
        held_row = wait_in_page(
            browser, JOB_ROW, lambda r: bool(r) and r[0] == "cancelled", arguments=("held",)
        )
        assert "4/4" in held_row[2]
        assert client.get("/jobs/held").json()["cancelled"] == 1
