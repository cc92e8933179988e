"""Scoped tokens for tests: the service's own minting, key pairs, and tokens forged by hand."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from service.core.settings import DEFAULT_JWT_AUDIENCE
from service.core.tokens import TokenAuthority

JWT_SECRET = "test-secret-0123456789abcdef-0123456789"
ADMIN_TOKEN = "static-admin-token"


def mint(
    scope: str,
    jobs: Iterable[str] | None = None,
    types: Iterable[str] | None = None,
    ttl_s: int = 300,
    secret: str = JWT_SECRET,
) -> str:
    """A token as the service mints it."""
    return TokenAuthority(DEFAULT_JWT_AUDIENCE, secret).mint(scope, ttl_s, jobs, types).token


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for events:read, with overrides (None removes a claim)."""
    values: dict[str, Any] = {
        "aud": DEFAULT_JWT_AUDIENCE,
        "exp": datetime.now(UTC) + timedelta(minutes=5),
        "scope": "events:read",
        **overrides,
    }
    return {name: value for name, value in values.items() if value is not None}


def forge(payload: dict[str, Any], key: Any = JWT_SECRET, algorithm: str = "HS256") -> str:
    """A token signed by hand, with any claims, key and algorithm."""
    return jwt.encode(payload, key, algorithm=algorithm)


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token: header and payload, an empty signature."""
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(json.dumps(payload, default=_epoch).encode())
    return f"{header.decode()}.{body.decode()}."


def _epoch(value: object) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp())
    raise TypeError(value)


def public_pem(private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
