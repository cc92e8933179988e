"""Scoped tokens: minting, verifying, and the 401s of tokens that are not ours."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from jwt.utils import base64url_encode

from harness.redis_server import RedisServer
from service.api.auth import RedactingRecordFactory, redact
from service.core.grants import Scope
from service.core.name_patterns import NamePatterns
from service.core.settings import DEFAULT_JWT_AUDIENCE, ConfigError, load_settings
from service.core.tokens import MAX_TTL_S, MintingUnavailable, TokenAuthority, TokenRefused
from tests.support.live_server import http, serve
from tests.support.processes import REPO_ROOT, service_env
from tests.support.service_settings import make_settings
from tests.support.tokens import (
    ADMIN_TOKEN,
    JWT_SECRET,
    claims,
    ed25519_key,
    forge,
    mint,
    public_pem,
    rsa_key,
    unsigned,
)

AUTHORITY = TokenAuthority(DEFAULT_JWT_AUDIENCE, JWT_SECRET)


def test_a_minted_token_carries_its_scopes_jobs_and_types() -> None:
    minted = AUTHORITY.mint("events:read jobs:read", 3600, jobs=["J1", "batch-*"], types=["a.*"])
    grant = AUTHORITY.verify(minted.token)
    assert grant.scopes == {Scope.EVENTS_READ, Scope.JOBS_READ}
    assert grant.jobs == NamePatterns(exact=frozenset({"J1"}), prefixes=("batch-",))
    assert grant.types == NamePatterns(prefixes=("a.",))
    assert grant.may_use_job("batch-7") and not grant.may_use_job("J2")
    assert timedelta(seconds=3590) < minted.expires_at - datetime.now(UTC) <= timedelta(hours=1)


def test_an_unlimited_token_is_not_limited() -> None:
    grant = AUTHORITY.verify(mint("metrics"))
    assert grant.jobs is None and grant.types is None and not grant.limited


# Factories, not tokens: tokens built at collection would expire before a long run reaches them.
NOT_OURS: dict[str, tuple[Callable[[], str], str]] = {
    "expired": (lambda: forge(claims(exp=datetime.now(UTC) - timedelta(minutes=1))), "expired"),
    "wrong-key": (
        lambda: forge(claims(), key="another-secret-0123456789abcdef-xyz"),
        "Signature",
    ),
    "wrong-audience": (lambda: forge(claims(aud="another-service")), "Audience"),
    "no-audience": (lambda: forge(claims(aud=None)), "aud"),
    "no-exp": (lambda: forge(claims(exp=None)), "exp"),
    "no-scope": (lambda: forge(claims(scope=None)), "scope"),
    "scope-not-text": (lambda: forge(claims(scope=["events:read"])), "scope"),
    "jobs-not-a-list": (lambda: forge(claims(jobs="J1")), "jobs"),
    "job-with-newline": (lambda: forge(claims(jobs=["J\n1"])), "jobs"),
    "alg-none": (lambda: unsigned(claims()), "none"),
    "alg-none-with-signature": (lambda: unsigned(claims()).rstrip(".") + ".c2ln", "none"),
    "garbage": (lambda: "not-a-jwt", "not a JWT"),
}


@pytest.mark.parametrize("case", NOT_OURS)
def test_tokens_that_are_not_ours_are_refused(case: str) -> None:
    make_token, reason = NOT_OURS[case]
    with pytest.raises(TokenRefused, match=reason):
        AUTHORITY.verify(make_token())


def test_rs256_and_eddsa_tokens_verify_with_the_public_key() -> None:
    for private_key, algorithm in ((rsa_key(), "RS256"), (ed25519_key(), "EdDSA")):
        verifier = TokenAuthority(DEFAULT_JWT_AUDIENCE, public_key_pem=public_pem(private_key))
        grant = verifier.verify(forge(claims(scope="tasks:write"), private_key, algorithm))
        assert grant.scopes == {Scope.TASKS_WRITE}
        with pytest.raises(TokenRefused, match="HS256"):
            verifier.verify(forge(claims(), JWT_SECRET, "HS256"))
        assert not verifier.can_mint


def test_an_hs256_token_keyed_with_the_public_key_is_refused() -> None:
    """The algorithm-confusion attack: the public key is public, so it must not be a secret."""
    private_key = rsa_key()
    pem = public_pem(private_key)
    verifier = TokenAuthority(DEFAULT_JWT_AUDIENCE, public_key_pem=pem)
    header = '{"alg":"HS256","typ":"JWT"}'
    payload = json.dumps(claims(), default=lambda value: int(value.timestamp()))
    signing_input = base64url_encode(header.encode()) + b"." + base64url_encode(payload.encode())
    signature = hmac.new(pem.encode(), signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + base64url_encode(signature)).decode()
    with pytest.raises(TokenRefused):
        verifier.verify(token)


def test_unknown_scopes_grant_nothing_but_cannot_be_minted() -> None:
    grant = AUTHORITY.verify(forge(claims(scope="events:read future:scope")))
    assert grant.scopes == {Scope.EVENTS_READ}
    with pytest.raises(ValueError, match="unknown scope 'event:read'"):
        AUTHORITY.mint("event:read", 60)


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"scope": "", "ttl_s": 60}, "at least one scope"),
        ({"scope": "metrics", "ttl_s": 0}, "ttl"),
        ({"scope": "metrics", "ttl_s": MAX_TTL_S + 1}, "ttl"),
        ({"scope": "admin", "ttl_s": 60, "jobs": ["J1"]}, "admin"),
        ({"scope": "metrics", "ttl_s": 60, "jobs": ["J\r\n1"]}, "jobs"),
        ({"scope": "metrics", "ttl_s": 60, "types": ["t"] * 33}, "types"),
    ],
)
def test_minting_refuses_what_it_cannot_honour(arguments: dict[str, Any], reason: str) -> None:
    scope, ttl_s = arguments.pop("scope"), arguments.pop("ttl_s")
    with pytest.raises(ValueError, match=reason):
        AUTHORITY.mint(scope, ttl_s, **arguments)


def test_a_verifier_without_the_secret_cannot_mint() -> None:
    verifier = TokenAuthority(DEFAULT_JWT_AUDIENCE, public_key_pem=public_pem(ed25519_key()))
    with pytest.raises(MintingUnavailable):
        verifier.mint("metrics", 60)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHIELD_JWT_SECRET", "too-short"),
        ("SHIELD_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"),
        ("SHIELD_JWT_AUDIENCE", ""),
    ],
)
def test_bad_token_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        load_settings(_env_file=None)


def test_a_public_key_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pem = public_pem(ed25519_key())
    monkeypatch.setenv("SHIELD_JWT_PUBLIC_KEY", pem)
    assert load_settings(_env_file=None).jwt_public_key == pem


# ---- the live API ------------------------------------------------------------------------


@pytest.fixture
def token_api(redis_server: RedisServer, redis_client: redis.Redis) -> Iterator[str]:
    settings = make_settings(redis_server, api_token=ADMIN_TOKEN, jwt_secret=JWT_SECRET)
    with serve(settings) as base_url:
        yield base_url


@pytest.mark.parametrize("case", ["expired", "wrong-key", "wrong-audience", "alg-none"])
def test_a_token_that_is_not_ours_gets_401(token_api: str, case: str) -> None:
    token = NOT_OURS[case][0]()
    with http(token_api, token=token) as client:
        reply = client.get("/events/stats")
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"] == "Bearer"
        stream = client.get("/events/stream", params={"access_token": token})
        assert stream.status_code == 401


def test_an_admin_mints_a_token_that_the_api_then_honours(token_api: str) -> None:
    with http(token_api, token=ADMIN_TOKEN) as admin:
        reply = admin.post("/tokens", json={"scope": "tasks:write", "jobs": ["J1"], "ttl_s": 600})
    assert reply.status_code == 201, reply.text
    minted = reply.json()
    expires_at = datetime.fromisoformat(minted["expires_at"])
    assert timedelta(seconds=590) < expires_at - datetime.now(UTC) <= timedelta(seconds=600)
    task = {"chunk_id": "c1", "content": "x"}
    with http(token_api, token=minted["token"]) as scoped:
        assert scoped.post("/tasks", json={"job_id": "J1", **task}).status_code == 201
        assert scoped.post("/tasks", json={"job_id": "J2", **task}).status_code == 403
        assert scoped.get("/events/stats").status_code == 403


def test_only_an_admin_mints_and_bad_requests_are_422(token_api: str) -> None:
    body = {"scope": "events:read", "ttl_s": 60}
    with http(token_api, token=mint("events:read events:write tasks:write")) as scoped:
        assert scoped.post("/tokens", json=body).status_code == 403
    with http(token_api, token=mint("admin")) as jwt_admin:
        assert jwt_admin.post("/tokens", json=body).status_code == 201
        assert jwt_admin.post("/tokens", json={**body, "scope": "nope"}).status_code == 422
        assert jwt_admin.post("/tokens", json={**body, "ttl_s": 10**9}).status_code == 422


def test_without_a_secret_there_is_no_minting_route(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with serve(make_settings(redis_server, api_token=ADMIN_TOKEN)) as base_url:
        with http(base_url, token=ADMIN_TOKEN) as admin:
            reply = admin.post("/tokens", json={"scope": "metrics", "ttl_s": 60})
    assert reply.status_code == 404


# ---- the command line --------------------------------------------------------------------


def run_cli(*arguments: str, **settings: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.tokens", *arguments],
        cwd=REPO_ROOT,
        env=service_env("redis://127.0.0.1:1/0", **settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_line_prints_the_token_as_its_last_line() -> None:
    done = run_cli(
        "mint", "--scope", "events:read jobs:read", "--job", "J1", "--ttl", "3600",
        jwt_secret=JWT_SECRET,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    grant = AUTHORITY.verify(token)
    assert grant.scopes == {Scope.EVENTS_READ, Scope.JOBS_READ}
    assert grant.jobs == NamePatterns(exact=frozenset({"J1"}))
    assert "expires at" in done.stderr


def test_the_command_line_without_a_secret_says_which_setting() -> None:
    done = run_cli("mint", "--scope", "metrics", "--ttl", "60")
    assert done.returncode == 2
    assert "SHIELD_JWT_SECRET" in done.stderr
    assert done.stdout == ""


# ---- the logs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "GET /events/stream?access_token={t} HTTP/1.1",
        "GET /events/stream?ACCESS_TOKEN={t} HTTP/1.1",
        "GET /events/stream?access%5Ftoken={t} HTTP/1.1",
        "GET /events/stream?access%5ftoken={t}&x=1 HTTP/1.1",
        "GET /events/stream?%61ccess_%74oken={t} HTTP/1.1",
        "Authorization: Bearer {t}",
        "authorization: bearer {t}",
    ],
)
def test_every_spelling_of_a_token_is_masked(line: str) -> None:
    for token in (mint("events:read", jobs=["J1"]), "opaque-guess-42"):
        masked = redact(line.format(t=token))
        assert token not in masked
        assert token.split(".")[-1] not in masked
        assert "***" in masked


def test_a_jwt_is_masked_wherever_it_appears() -> None:
    token = mint("events:read")
    assert redact(f"token {token} was refused") == "token *** was refused"


def test_a_jwt_is_masked_in_a_log_record_on_any_logger() -> None:
    token = mint("admin")
    factory = RedactingRecordFactory(logging.LogRecord)
    record = factory("any", logging.INFO, __file__, 1, "refused %s for %s", (token, "x"), None)
    assert token not in record.getMessage()
