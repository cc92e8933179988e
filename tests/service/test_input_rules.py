"""Input rules (issue 17 part 5): each test here is an attack from the issue, now refused."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from harness.ports import free_port
from harness.redis_server import RedisServer
from service.core.settings import ConfigError, load_settings
from service.events.filters import MAX_TYPE_PATTERNS
from tests.support.handshakes import websocket_handshake_status
from tests.support.live_server import http, serve, wait_for
from tests.support.processes import REPO_ROOT, service_env, stop
from tests.support.service_settings import make_settings
from tests.support.tokens import ADMIN_TOKEN, JWT_SECRET, mint

QUEUE = "shield:ingestion_queue"
EVENTS = "shield:events"


def run_input(run_id: str = "run-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "threadId": "t",
        "runId": run_id,
        "messages": [{"id": "m1", "role": "user", "content": "a document"}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }
    return {**body, **overrides}


# ---- types= ------------------------------------------------------------------------------


def types_param(count: int) -> str:
    return ",".join(f"t{index}.x" for index in range(count))


async def test_types_takes_at_most_32_patterns(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        too_many = await client.get(
            "/events/stream", params={"types": types_param(MAX_TYPE_PATTERNS + 1)}
        )
        assert too_many.status_code == 400
        assert "at most 32" in too_many.json()["detail"]
        params = {"types": types_param(MAX_TYPE_PATTERNS), "last_id": "$"}
        async with client.stream("GET", "/events/stream", params=params) as allowed:
            assert allowed.status_code == 200
    ws_url = api.replace("http://", "ws://") + "/events/ws?types="
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url + types_param(MAX_TYPE_PATTERNS + 1)):
            pass
    assert refused.value.response.status_code == 400


# ---- Content-Type ------------------------------------------------------------------------

JSON_ROUTES = [
    ("/events", {"type": "a.b"}),
    ("/tasks", {"job_id": "j", "chunk_id": "c", "content": "x"}),
    ("/agui/ingest", run_input()),
]


@pytest.mark.parametrize(("path", "body"), JSON_ROUTES)
@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_json_routes_refuse_other_content_types_with_415(
    api: str, redis_client: redis.Redis, path: str, body: dict[str, Any], content_type: str | None
) -> None:
    """A page on any origin may POST text/plain without a preflight: a cross-site run."""
    headers = {"Content-Type": content_type} if content_type else {}
    with http(api) as client:
        reply = client.post(path, content=json.dumps(body).encode(), headers=headers)
    assert reply.status_code == 415
    assert "application/json" in reply.json()["detail"]
    assert redis_client.xlen(QUEUE) == 0
    assert redis_client.xlen(EVENTS) == 0


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_with_parameters_or_any_case_is_json(api: str, content_type: str) -> None:
    with http(api) as client:
        reply = client.post(
            "/events", content=b'{"type": "a.b"}', headers={"Content-Type": content_type}
        )
    assert reply.status_code == 201


def test_minting_needs_json_too(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    settings = make_settings(redis_server, api_token=ADMIN_TOKEN, jwt_secret=JWT_SECRET)
    with serve(settings) as base_url, http(base_url, token=ADMIN_TOKEN) as admin:
        body = b'{"scope": "metrics", "ttl_s": 60}'
        assert admin.post("/tokens", content=body).status_code == 415


# ---- the WebSocket's origin --------------------------------------------------------------


def test_dns_rebinding_gets_no_websocket(api: str) -> None:
    """evil.example resolves to this API: its page's Origin and the Host it sends agree."""
    port = httpx.URL(api).port
    rebound = f"evil.example:{port}"
    status = websocket_handshake_status(api, "/events/ws", rebound, f"http://{rebound}")
    assert status == 403
    loopback = f"127.0.0.1:{port}"
    assert websocket_handshake_status(api, "/events/ws", loopback, f"http://{loopback}") == 101
    local = f"localhost:{port}"
    assert websocket_handshake_status(api, "/events/ws", local, f"http://{local}") == 101


def test_server_names_decide_which_origins_are_ours(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_server, server_names=("Shield.example:8443", "ui.example"))
    with serve(settings) as base_url:
        port = httpx.URL(base_url).port

        def status(origin: str, host: str = f"127.0.0.1:{port}") -> int:
            return websocket_handshake_status(base_url, "/events/ws", host, origin)

        assert status("https://shield.example:8443") == 101
        assert status("https://ui.example") == 101
        assert status("http://ui.example") == 101
        assert status("https://ui.example:8443") == 403
        # Once names are set, even a loopback origin is not ours unless listed.
        assert status(f"http://127.0.0.1:{port}") == 403
        assert status("http://evil.example", host="evil.example") == 403


def test_server_names_are_read_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIELD_SERVER_NAMES", '["Shield.Example:8443", "api.example", "[::1]:80"]')
    assert load_settings(_env_file=None).server_names == (
        "shield.example:8443",
        "api.example",
        "[::1]:80",
    )


@pytest.mark.parametrize(
    "value", ['["https://a.example"]', '["a.example/path"]', '["a.example:99999"]', '["*"]']
)
def test_a_bad_server_name_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SHIELD_SERVER_NAMES", value)
    with pytest.raises(ConfigError, match="^SHIELD_SERVER_NAMES: "):
        load_settings(_env_file=None)


# ---- ids ---------------------------------------------------------------------------------

CONTROL = ["a\r\nb", "a\nFORGED 200", "a\x00", "a\x1b[31m", "a\u202eb", "a\u2028b"]


@pytest.mark.parametrize("bad", CONTROL)
@pytest.mark.parametrize("field", ["job_id", "chunk_id"])
def test_task_ids_refuse_control_characters(
    api: str, redis_client: redis.Redis, field: str, bad: str
) -> None:
    """A job_id with CR/LF forged log lines."""
    body = {"job_id": "j", "chunk_id": "c", "content": "x", field: bad}
    with http(api) as client:
        reply = client.post("/tasks", json=body)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", field]
    assert redis_client.xlen(QUEUE) == 0


@pytest.mark.parametrize("bad", CONTROL)
def test_event_job_ids_and_run_ids_refuse_control_characters(
    api: str, redis_client: redis.Redis, bad: str
) -> None:
    with http(api) as client:
        assert client.post("/events", json={"type": "a.b", "job_id": bad}).status_code == 422
        reply = client.post("/agui/ingest", json=run_input(bad))
    assert reply.status_code == 422
    assert "runId" in reply.json()["detail"]
    assert redis_client.xlen(QUEUE) == 0
    assert redis_client.xlen(EVENTS) == 0


def test_a_run_id_cannot_reach_another_runs_keys(api: str, redis_client: redis.Redis) -> None:
    """runId ``victim:enqueuing`` would be run victim's lock, blocking it for a day."""
    with http(api) as client:
        squat = client.post("/agui/ingest", json=run_input("victim:enqueuing"))
        assert squat.status_code == 422
        assert "':'" in squat.json()["detail"]
        assert redis_client.keys("shield:agui:*") == []
        with client.stream("POST", "/agui/ingest", json=run_input("victim")) as reply:
            assert reply.status_code == 200
    assert redis_client.xlen(QUEUE) == 1


# ---- forwardedProps ----------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("forwarded", "reason"),
    [
        (b'{"metadata": {"score": NaN}}', "NaN"),
        (b'{"metadata": {"score": Infinity}}', "NaN"),
        (b'{"other": [-Infinity]}', "NaN"),
        (json.dumps({"metadata": nested(40)}).encode(), "nested deeper"),
    ],
    ids=["nan", "infinity", "other-key", "deep"],
)
def test_forwarded_props_pass_the_json_safety_check(
    api: str, redis_client: redis.Redis, forwarded: bytes, reason: str
) -> None:
    """forwardedProps.metadata stored NaN, against the README's promise."""
    body = json.dumps(run_input()).replace('"forwardedProps": {}', '"forwardedProps": FP')
    raw = body.encode().replace(b"FP", forwarded)
    with http(api) as client:
        reply = client.post(
            "/agui/ingest", content=raw, headers={"Content-Type": "application/json"}
        )
    assert reply.status_code == 422
    assert "forwardedProps" in reply.json()["detail"]
    assert reason in reply.json()["detail"]
    assert redis_client.xlen(QUEUE) == 0


# ---- /health/detailed --------------------------------------------------------------------


def test_health_detailed_without_a_token_says_only_the_status(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_server, api_token=ADMIN_TOKEN)
    with serve(settings) as base_url:
        with http(base_url) as anonymous:
            assert anonymous.get("/health/detailed").json() == {"status": "up"}
        with http(base_url, token=ADMIN_TOKEN) as admin:
            assert "streams" in admin.get("/health/detailed").json()


def test_health_detailed_hides_the_redis_address_when_redis_is_down(
    redis_server: RedisServer,
) -> None:
    """Without a token, a down Redis named its address."""
    dead_port = free_port()
    settings = make_settings(
        redis_server, api_token=ADMIN_TOKEN, redis_url=f"redis://127.0.0.1:{dead_port}/0"
    )
    with serve(settings) as base_url:
        with http(base_url) as anonymous:
            reply = anonymous.get("/health/detailed")
        assert reply.status_code == 503
        assert reply.json() == {"status": "down"}
        with http(base_url, token=ADMIN_TOKEN) as admin:
            detailed = admin.get("/health/detailed")
        assert detailed.status_code == 503
        assert str(dead_port) in detailed.json()["error"]


# ---- the log -----------------------------------------------------------------------------


@pytest.fixture
def logging_api(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """uvicorn as the unit file runs it, at info level (access lines), its output in a file."""
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "service.main:app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
            ],
            cwd=REPO_ROOT,
            env={
                **service_env(redis_server.url, api_token=ADMIN_TOKEN, jwt_secret=JWT_SECRET),
                "PYTHONUNBUFFERED": "1",
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, timeout_s=20)
        yield base_url, process, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_every_spelling_of_access_token_is_masked_in_the_log(
    logging_api: tuple[str, subprocess.Popen[str], Path],
) -> None:
    """?access%5Ftoken= was accepted, and shown in the access log."""
    base_url, process, log_path = logging_api
    token = mint("events:read")
    refused = mint("metrics")
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for name in ("access_token", "access%5Ftoken", "ACCESS_TOKEN", "%61ccess%5ftoken"):
            query = f"/events/stream?last_id=$&{name}="
            with client.stream("GET", query + token) as reply:
                reply.close()
            client.get(query + refused)
            client.get("/events/stats", headers={"Authorization": f"Bearer {refused}"})
            # Not a JWT and not the API token: masked for its name alone.
            client.get(f"/events/stream?{name}=opaque-guess-42")
    stop(process, timeout_s=10)
    output = log_path.read_text()
    assert "access%5Ftoken=***" in output, output
    assert "ACCESS_TOKEN=***" in output, output
    assert "opaque-guess-42" not in output
    for secret in (token, refused, ADMIN_TOKEN, JWT_SECRET):
        assert secret not in output
        assert secret.split(".")[-1] not in output
