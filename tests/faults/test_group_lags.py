"""A minute of mixed traffic leaves every group's lag bounded: every group has a reader."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest
import redis

from harness.redis_server import RedisServer
from tests.support.live_server import http, serve, wait_for
from tests.support.processes import service_env, start_collector, start_worker
from tests.support.service_settings import make_settings

# Needs a minute: in make test, not in make check.
pytestmark = pytest.mark.slow

MINUTE_S = 60.0
SAMPLE_EVERY_S = 5.0
WARMUP_S = 10.0
# Per second: 20 tasks and 20 events; a reader that keeps up is never a second behind.
POSTS_PER_S = 20
LAG_BOUND = 200
APPS = ("ag-ui-frontend", "power-ui-frontend", "dashboard-frontend")


def follow(base_url: str, app: str, stop: threading.Event) -> None:
    """A client of `app`, reading the stream from now until told to stop."""
    params = {"last_id": "$", "app": app}
    with httpx.stream("GET", f"{base_url}/events/stream", params=params, timeout=30) as reply:
        for _ in reply.iter_lines():
            if stop.is_set():
                return


def post_mixed(base_url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        index = 0
        while not stop.is_set():
            started = time.monotonic()
            body = {"job_id": f"job-{index // 50}", "chunk_id": f"c{index}", "content": "x"}
            client.post("/tasks", json=body)
            client.post("/events", json={"type": "test.mixed", "data": {"n": index}})
            index += 1
            time.sleep(max(0.0, 1 / POSTS_PER_S - (time.monotonic() - started)))


def lags(base_url: str) -> dict[str, int | None]:
    streams = httpx.get(f"{base_url}/events/stats", timeout=10).json()["streams"]
    return {
        f"{stream}/{row['name']}": row["lag"]
        for stream, info in streams.items()
        for row in info["groups"]
    }


def test_a_minute_of_mixed_traffic_leaves_every_groups_lag_bounded(
    redis_server: RedisServer, redis_client: redis.Redis, workers: list[subprocess.Popen[str]]
) -> None:
    env = service_env(
        redis_server.url, block_ms=200, task_handler="tests.service.handlers:noop_async"
    )
    workers.append(start_worker(env))
    # The metrics-collector group's reader is a process of its own, beside the workers.
    workers.append(start_collector(env))
    stop_posting, stop_following = threading.Event(), threading.Event()
    with serve(make_settings(redis_server)) as base_url, http(base_url):
        threads = [
            threading.Thread(target=follow, args=(base_url, app, stop_following), daemon=True)
            for app in APPS
        ]
        poster = threading.Thread(target=post_mixed, args=(base_url, stop_posting), daemon=True)
        threads.append(poster)
        for thread in threads:
            thread.start()
        samples: list[dict[str, int | None]] = []
        started = time.monotonic()
        try:
            while time.monotonic() - started < MINUTE_S:
                time.sleep(SAMPLE_EVERY_S)
                if time.monotonic() - started >= WARMUP_S:
                    samples.append(lags(base_url))
            stop_posting.set()
            poster.join(timeout=10)
            # With the traffic stopped, everything is read (or sent) to the end.
            wait_for(lambda: all(lag == 0 for lag in lags(base_url).values()), timeout_s=15)
        finally:
            stop_posting.set()
            stop_following.set()
        # Every group, on both streams, was sampled and stayed within the bound.
        assert len(samples) >= (MINUTE_S - WARMUP_S) // SAMPLE_EVERY_S - 1
        assert len(samples[0]) == 6, samples[0]
        for sample in samples:
            assert all(lag is not None and lag <= LAG_BOUND for lag in sample.values()), sample
