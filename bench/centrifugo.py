"""Centrifugo as the fan-out peer: its configuration, its process, and a publisher for it.

Centrifugo runs with its Redis engine on the benchmark's own redis-server, so both systems
keep their events in the same Redis. The channel keeps a history (100 publications, 300 s)
with recovery forced, the nearest match to our stream that a client can resume from. The
publisher sends each 10 ms tick's events as one POST /api/batch, as ours sends each tick as
one pipeline of XADDs. Subscribers connect without a token (`client.insecure`), on its
unidirectional SSE (plain `data:` frames, read by the same client code as our SSE) and on its
WebSocket with the JSON protocol (read by the same frame reader as our WebSocket).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.peers.install import CENTRIFUGO_VERSION, PeerUnavailable, centrifugo_binary
from bench.servers import wait_for_http
from harness.ports import free_port
from harness.processes import terminate

CHANNEL = "news"
API_KEY = "bench-api-key"


# The channel's history, as ours keeps a stream a client resumes from; without it
# Centrifugo is plain pub/sub (no resume), its cheapest setting, measured beside it.
HISTORY = {"history_size": 100, "history_ttl": "300s", "force_recovery": True}


def configuration(port: int, redis_url: str, history: bool = True) -> dict[str, Any]:
    """A v6 configuration (its keys are nested by section) for one loopback node."""
    return {
        "http_server": {"address": "127.0.0.1", "port": str(port)},
        "log": {"level": "error"},
        "engine": {"type": "redis", "redis": {"address": [redis_url]}},
        # Loopback only, no tokens: the benchmark's clients are anonymous.
        "client": {"insecure": True, "allowed_origins": ["*"]},
        "channel": {"without_namespace": HISTORY if history else {}},
        "uni_sse": {"enabled": True},
        "http_api": {"key": API_KEY},
        "health": {"enabled": True},
        # It would otherwise report anonymous usage over the network; here only loopback.
        "usage_stats": {"disabled": True},
    }


def describe() -> str:
    """One line for the report: what ran, and how it was configured."""
    return (
        f"Centrifugo v{CENTRIFUGO_VERSION} (built with `go install` from the module proxy),"
        " Redis engine on the same redis-server, channel history 100 / 300 s with"
        " force_recovery (`centrifugo-nohistory`: the same without history, plain pub/sub"
        " with no resume), subscribers on uni_sse and on its WebSocket (JSON protocol),"
        " publishes by POST /api/batch per 10 ms tick"
    )


def subscribe_path() -> str:
    """The uni_sse request that connects and subscribes to the channel in one go."""
    connect = json.dumps({"subs": {CHANNEL: {}}}, separators=(",", ":"))
    return f"/connection/uni_sse?cf_connect={quote(connect)}"


def websocket_greeting() -> tuple[bytes, bytes]:
    """The first frame a JSON-protocol client sends (connect, then subscribe, newline-
    separated as the protocol batches commands) and what the subscribe reply holds."""
    commands = [{"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": CHANNEL}}]
    greeting = "\n".join(json.dumps(c, separators=(",", ":")) for c in commands)
    return greeting.encode(), b'"id":2'


@dataclass(frozen=True)
class CentrifugoNode:
    base_url: str
    pid: int


@contextmanager
def centrifugo_node(
    workdir: Path, redis_url: str, history: bool = True
) -> Iterator[CentrifugoNode]:
    """One Centrifugo process on a free port; raises PeerUnavailable when it is not built."""
    binary = centrifugo_binary()
    if not binary.exists():
        raise PeerUnavailable(
            f"Centrifugo v{CENTRIFUGO_VERSION} is not built (make bench builds it)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "centrifugo.json"
    config.write_text(json.dumps(configuration(port, redis_url, history), indent=2))
    log = (workdir / "centrifugo.log").open("w")
    process = subprocess.Popen(
        [str(binary), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base_url}/health", process, "centrifugo")
        yield CentrifugoNode(base_url, process.pid)
    finally:
        terminate([process])
        log.close()


class BatchPublisher:
    """Sends a tick's events to the channel as one POST /api/batch over a kept-alive socket."""

    def __init__(self, base_url: str) -> None:
        # Past saturation a publish can wait long; the cell then reports the wait, not a crash.
        self._http = httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=60)

    def send(self, events: list[dict[str, int]]) -> None:
        commands = [{"publish": {"channel": CHANNEL, "data": event}} for event in events]
        reply = self._http.post("/api/batch", json={"commands": commands})
        reply.raise_for_status()
        errors = [r["error"] for r in reply.json().get("replies", []) if r.get("error")]
        if errors:
            raise RuntimeError(f"centrifugo refused a publish: {errors[0]}")

    def close(self) -> None:
        self._http.close()
