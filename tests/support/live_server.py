"""The real app served by uvicorn on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from harness.ports import free_port
from harness.waiting import wait_until
from service.core.settings import Settings
from service.main import create_app


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Run the API until the block ends; yields its base URL."""
    port = free_port()
    # A bounded graceful shutdown, as the unit's --timeout-graceful-shutdown: a client that
    # keeps the socket of a refused WebSocket handshake open would otherwise hold the
    # server until thread.join gives up (15 s per test).
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        return server.started

    wait_until(started, 10, interval_s=0.02, describe=f"uvicorn to serve {base_url}")
    try:
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


# The name tests used before harness.waiting; new tests call wait_until from there.
wait_for = wait_until


def http(base_url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=10)
