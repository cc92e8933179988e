"""A real headless Chromium (Debian's chromium and chromium-driver) and a second origin.

The browser is driven by Selenium through the packaged chromedriver, named explicitly so
Selenium never tries to download one. The second origin is a tiny page served from another
loopback port: scripts run in it are cross-origin to the API exactly as a front-end would be.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support.redis_server import free_port

FOREIGN_PAGE = b"<!doctype html><html><head><title>foreign</title></head><body></body></html>"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed: run `make deps` (apt chromium chromium-driver)"
        )
    return path


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium for one test, quit when the block ends.

    Open it inside the API's block: Chromium keeps an abandoned event stream's socket open to
    drain it, and the API's shutdown would wait for that stream until the test gives up.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1100",
    ):
        options.add_argument(argument)
    # Console and network errors, for tests that check none happened (see browser_errors).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class _ForeignPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(FOREIGN_PAGE)))
        self.end_headers()
        self.wfile.write(FOREIGN_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def foreign_origin() -> Iterator[str]:
    """The origin of a page that is not the API's: the same host, another port."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _ForeignPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_in_page(
    driver: webdriver.Chrome,
    script: str,
    accept: Callable[[Any], bool] = bool,
    timeout_s: float = 15.0,
    arguments: tuple[Any, ...] = (),
) -> Any:
    """Evaluate script in the page until accept(result); returns the accepted result."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = driver.execute_script(script, *arguments)
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"page never satisfied the condition; last value {result!r}")
        time.sleep(0.05)


def browser_errors(driver: webdriver.Chrome) -> list[str]:
    """The console's messages so far (each read once), such as failed network loads."""
    return [entry["message"] for entry in driver.get_log("browser")]
