"""A stand-in for the customer's service that an ``http:<url>`` handler posts to.

It serves on a free loopback port from a thread of the test process, answers each request
with the next scripted `Reply` (the last one repeats), and records what it was sent, so a
test can script "500, 500, then 200" and check every request's headers and body.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer; `delay_s` holds it back (a slow service, or a timeout)."""

    status: int = 200
    body: str = '{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as the stand-in saw it."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the test reads `received` instead."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        reply = self.server.standin.record(
            Received(self.path, dict(self.headers.items()), body, time.monotonic())
        )
        time.sleep(reply.delay_s)
        encoded = reply.body.encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: HttpStandin) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.standin = standin

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when the client gave up (a handler timeout does that on purpose)."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class HttpStandin:
    """The scripted service; use as a context manager, which stops it."""

    def __init__(self, *replies: Reply) -> None:
        self._replies = list(replies) or [Reply()]
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http-standin", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self, request: Received) -> Reply:
        """Keep the request and give the reply scripted for it."""
        with self._lock:
            self.received.append(request)
            index = min(len(self.received), len(self._replies)) - 1
            return self._replies[index]

    def __enter__(self) -> HttpStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
