"""The dashboard's files: served without a token, from a fixed list, under a strict CSP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from harness.redis_server import RedisServer
from tests.support.live_server import serve
from tests.support.service_settings import make_settings

TOKEN = "dashboard-token"


@pytest.fixture
def secured(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[str]:
    with serve(make_settings(redis_server, api_token=TOKEN)) as base_url:
        yield base_url


def test_root_redirects_to_the_dashboard(secured: str) -> None:
    reply = httpx.get(f"{secured}/")
    assert reply.status_code == 307
    assert httpx.URL(f"{secured}/").join(reply.headers["location"]).path == "/dashboard"


@pytest.mark.parametrize(
    ("path", "media_type", "marker"),
    [
        ("/dashboard", "text/html", b'<script src="dashboard/dashboard.js"'),
        ("/dashboard/dashboard.js", "text/javascript", b"sessionStorage"),
        ("/dashboard/dashboard.css", "text/css", b"--accent"),
    ],
)
def test_dashboard_files_need_no_token(
    secured: str, path: str, media_type: str, marker: bytes
) -> None:
    reply = httpx.get(f"{secured}{path}")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(media_type)
    assert marker in reply.content
    assert "default-src 'self'" in reply.headers["content-security-policy"]
    assert reply.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/missing.js",
        "/dashboard/dashboard.html",
        "/dashboard/..%2Fapi%2Fauth.py",
        "/dashboard/%2e%2e%2fconfig.py",
    ],
)
def test_only_the_listed_dashboard_files_are_served(secured: str, path: str) -> None:
    assert httpx.get(f"{secured}{path}").status_code == 404


def test_the_data_behind_the_dashboard_still_needs_the_token(secured: str) -> None:
    assert httpx.get(f"{secured}/dashboardx").status_code == 401
    assert httpx.get(f"{secured}/events/stats").status_code == 401
    assert httpx.get(f"{secured}/tasks/dead-letters").status_code == 401


def test_page_references_nothing_off_origin(secured: str) -> None:
    page = httpx.get(f"{secured}/dashboard").text
    assert "http://" not in page
    assert "https://" not in page
