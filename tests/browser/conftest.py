"""A second origin for the browser tests (the browser itself is tests.support.browser).

The second origin is a tiny page served from another loopback port: scripts run in it are
cross-origin to the API exactly as a front-end would be.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from harness.ports import free_port

FOREIGN_PAGE = b"<!doctype html><html><head><title>foreign</title></head><body></body></html>"


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
