"""SIGTERM to a real uvicorn: every open stream ends with a notice and a complete response."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.ports import free_port
from harness.redis_server import RedisServer
from tests.support.agui_input import run_input
from tests.support.processes import service_env, start_api, wait_until_serving

INCOMPLETE = "ASGI callable returned without completing response"


@dataclass
class RawStream:
    connection: socket.socket
    received: bytes


def open_raw(port: int, request: bytes, opened_by: bytes) -> RawStream:
    """A raw HTTP/1.1 request, read up to opened_by, so no client library hides framing."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=15)
    connection.sendall(request)
    received = b""
    while opened_by not in received:
        received += connection.recv(65536)
    return RawStream(connection, received)


def open_stream(port: int, query: str) -> RawStream:
    request = f"GET /events/stream?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    return open_raw(port, request.encode(), b"retry: ")


def open_agui_run(port: int, run_id: str) -> RawStream:
    body = json.dumps(run_input(run_id, "a short document")).encode()
    head = (
        f"POST /agui/ingest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return open_raw(port, head.encode() + body, b"STATE_SNAPSHOT")


def read_to_close(stream: RawStream) -> bytes:
    received = stream.received
    while chunk := stream.connection.recv(65536):
        received += chunk
    stream.connection.close()
    return received


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The payload of a chunked body, and whether it ended with the zero-length chunk."""
    payload = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return payload, rest == b"\r\n"
        payload += rest[:size]
        body = rest[size + 2 :]
    return payload, False


def notices(payload: bytes) -> list[tuple[str, dict[str, str]]]:
    found = []
    for message in payload.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in message.splitlines() if ": " in line)
        if lines.get("event") == "notice":
            found.append((lines["id"], json.loads(lines["data"])))
    return found


@pytest.fixture
def api_port(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[int]:
    yield free_port()


def test_sigterm_ends_every_stream_with_a_shutdown_notice_and_the_last_chunk(
    redis_server: RedisServer, redis_client: redis.Redis, api_port: int
) -> None:
    process = start_api(service_env(redis_server.url, block_ms=200), api_port)
    base_url = f"http://127.0.0.1:{api_port}"
    try:
        wait_until_serving(base_url, process)
        ids = [
            httpx.post(f"{base_url}/events", json={"type": "test.event"}).json()["id"]
            for _ in range(3)
        ]
        everything = open_stream(api_port, "last_id=0")
        filtered = open_stream(api_port, "last_id=$&types=other.*")
        agui = open_agui_run(api_port, "run-at-shutdown")
        with connect(f"ws://127.0.0.1:{api_port}/events/ws?last_id=$") as socket_client:
            process.send_signal(signal.SIGTERM)
            responses = [read_to_close(everything), read_to_close(filtered)]
            agui_response = read_to_close(agui)
            with pytest.raises(ConnectionClosed) as closed:
                socket_client.recv(timeout=15)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    log = process.stderr.read()
    assert INCOMPLETE not in log, log
    # uvicorn closes WebSockets itself, with "service restart", which clients treat as retry.
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    # Both streams resume from the newest event: the last test event, or the AG-UI run's
    # ingestion.queued written after it.
    [(newest, _)] = redis_client.xrevrange("shield:events", count=1)
    assert all(f"id: {entry_id}".encode() in responses[0] for entry_id in ids)
    for response, resume_from in zip(responses, [newest, newest], strict=True):
        head, _, body = response.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        payload, complete = dechunk(body)
        assert complete, body[-200:]
        [(notice_id, notice)] = notices(payload)
        assert notice_id == resume_from
        assert notice == {
            "notice": "shutdown",
            "message": "server shutting down",
            "resume_from": resume_from,
        }
        assert payload.endswith(b"\n\n")
    # No worker runs the chunk: the run is open when the server stops, and says so.
    head, _, body = agui_response.partition(b"\r\n\r\n")
    payload, complete = dechunk(body)
    assert complete, body[-200:]
    # Every AG-UI frame carries its id: line, then its data line.
    id_line, data_line = payload.decode().strip().split("\n\n")[-1].split("\n")
    assert id_line.startswith("id: ")
    last = json.loads(data_line.removeprefix("data: "))
    assert last["type"] == "RUN_ERROR" and last["code"] == "stream_interrupted"
    assert "server shutting down" in last["message"]
