"""Which origins may use the API: the Origin rules, CORS preflights, and the WebSocket's 403."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis
import websockets

from harness.redis_server import RedisServer
from service.api.origins import is_same_origin, origin_allowed
from service.core.settings import ConfigError, load_settings
from tests.support.live_server import serve
from tests.support.service_settings import make_settings

TOKEN = "origin-token"
LISTED = "http://app.example:8080"
FOREIGN = "http://evil.example"


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://LOCALHOST:8000", "localhost:8000", True),
        ("http://example.com", "example.com", True),
        ("http://example.com", "example.com:80", True),
        ("https://example.com", "example.com:443", True),
        ("https://example.com", "example.com:80", False),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("http://127.0.0.2:8000", "127.0.0.1:8000", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("null", "127.0.0.1:8000", False),
        ("file://", "127.0.0.1:8000", False),
        ("http://example.com:notaport", "example.com", False),
        ("http://[::1", "[::1]:80", False),
        ("http://me@example.com", "example.com", False),
        ("http://example.com", "me@example.com", False),
        ("http://example.com", None, False),
        ("http://example.com", "", False),
    ],
)
def test_same_origin_compares_scheme_default_host_and_port(
    origin: str, host: str | None, same: bool
) -> None:
    assert is_same_origin(origin, host) is same


@pytest.mark.parametrize(
    ("headers", "allowed", "verdict"),
    [
        ({}, (), True),  # no Origin: not a browser page, the token decides
        ({"origin": FOREIGN, "host": "api:1"}, (), False),
        ({"origin": FOREIGN, "host": "api:1"}, (LISTED,), False),
        ({"origin": LISTED, "host": "api:1"}, (LISTED,), True),
        ({"origin": FOREIGN, "host": "api:1"}, ("*",), True),
        # Host alone makes no origin ours (DNS rebinding): only a loopback one, by default.
        ({"origin": "http://api:1", "host": "api:1"}, (LISTED,), False),
        ({"origin": "http://127.0.0.1:1", "host": "127.0.0.1:1"}, (LISTED,), True),
    ],
)
def test_origin_allowed_when_absent_listed_or_our_own(
    headers: dict[str, str], allowed: tuple[str, ...], verdict: bool
) -> None:
    assert origin_allowed(headers, allowed) is verdict


@pytest.mark.parametrize(
    "value", ['["http://a.example/"]', '["a.example"]', '["http://a.example/path"]', '"x"']
)
def test_bad_cors_origin_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SHIELD_CORS_ORIGINS", value)
    with pytest.raises(ConfigError, match="^SHIELD_CORS_ORIGINS: "):
        load_settings(_env_file=None)


def test_cors_origins_read_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIELD_CORS_ORIGINS", f'["{LISTED}", "https://b.example"]')
    assert load_settings(_env_file=None).cors_origins == (LISTED, "https://b.example")


@pytest.fixture
def cors_api(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[str]:
    settings = make_settings(redis_server, cors_origins=(LISTED,), api_token=TOKEN)
    with serve(settings) as base_url:
        yield base_url


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type,last-event-id",
    }


@pytest.mark.parametrize("path", ["/events", "/tasks", "/events/stream"])
def test_preflight_from_listed_origin_is_answered_without_a_token(cors_api: str, path: str) -> None:
    reply = httpx.options(f"{cors_api}{path}", headers=preflight(LISTED))
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == LISTED
    allowed = reply.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed
    assert "last-event-id" in allowed  # a fetch() reader resuming a stream sets it itself
    assert "POST" in reply.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in reply.headers


def test_preflight_from_unlisted_origin_is_refused(cors_api: str) -> None:
    reply = httpx.options(f"{cors_api}/events", headers=preflight(FOREIGN))
    assert reply.status_code == 400
    assert "access-control-allow-origin" not in reply.headers


def test_refusals_carry_cors_headers_so_the_page_can_read_them(cors_api: str) -> None:
    unauthorized = httpx.post(
        f"{cors_api}/events", json={"type": "a.b"}, headers={"Origin": LISTED}
    )
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == LISTED
    too_big = httpx.post(
        f"{cors_api}/events",
        content=b"x" * 70_000,
        headers={"Origin": LISTED, "Authorization": f"Bearer {TOKEN}"},
    )
    assert too_big.status_code == 413
    assert too_big.headers["access-control-allow-origin"] == LISTED


def test_stream_answers_listed_origin_with_cors_headers(cors_api: str) -> None:
    headers = {"Origin": LISTED, "Authorization": f"Bearer {TOKEN}"}
    with httpx.stream("GET", f"{cors_api}/events/stream", headers=headers) as reply:
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == LISTED
    headers["Origin"] = FOREIGN
    with httpx.stream("GET", f"{cors_api}/events/stream", headers=headers) as reply:
        assert "access-control-allow-origin" not in reply.headers


def test_without_cors_origins_no_cors_headers_are_sent(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with serve(make_settings(redis_server)) as api:
        reply = httpx.options(f"{api}/events", headers=preflight(LISTED))
        assert reply.status_code == 405
        assert "access-control-allow-origin" not in reply.headers
        posted = httpx.post(f"{api}/events", json={"type": "a.b"}, headers={"Origin": LISTED})
        assert "access-control-allow-origin" not in posted.headers


async def test_websocket_refuses_a_foreign_origin_with_403(cors_api: str) -> None:
    url = cors_api.replace("http://", "ws://") + f"/events/ws?last_id=$&access_token={TOKEN}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, origin=websockets.Origin(FOREIGN)):
            pass
    assert refused.value.response.status_code == 403
    host = cors_api.removeprefix("http://")
    for origin in (LISTED, f"http://{host}", None):
        chosen = websockets.Origin(origin) if origin else None
        async with websockets.connect(url, origin=chosen) as connection:
            await connection.ping()


async def test_origin_is_checked_before_the_resume_point(cors_api: str) -> None:
    url = cors_api.replace("http://", "ws://") + f"/events/ws?last_id=bad&access_token={TOKEN}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, origin=websockets.Origin(FOREIGN)):
            pass
    assert refused.value.response.status_code == 403


def test_a_page_may_cancel_a_job_and_retry_a_write_safely(cors_api: str) -> None:
    headers = {**preflight(LISTED, "DELETE"), "Access-Control-Request-Headers": "idempotency-key"}
    reply = httpx.options(f"{cors_api}/jobs/j1", headers=headers)
    assert reply.status_code == 200
    assert "DELETE" in reply.headers["access-control-allow-methods"]
    assert "idempotency-key" in reply.headers["access-control-allow-headers"].lower()
