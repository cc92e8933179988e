"""Scoped tokens: JWTs minted with HS256 and ``SHIELD_JWT_SECRET``, or verified with the PEM
``SHIELD_JWT_PUBLIC_KEY`` (RS256 or EdDSA) for tokens minted elsewhere, through PyJWT.

Claims: ``exp`` (required), ``aud`` (required, ``SHIELD_JWT_AUDIENCE``, by default
``shield-orchestrator``, so a token minted for another service of the same issuer is refused),
``scope`` (required, space-separated), and optional ``jobs`` and ``types`` (lists of patterns,
service.core.name_patterns). Each key verifies only its own algorithm, picked from the token's
header: ``alg: none`` and an HS256 token "signed" with the public key are refused. Unknown
scope names grant nothing, so a newer minter's tokens still work here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from service.core.grants import Grant, Scope, parse_scopes

HMAC_ALGORITHM = "HS256"
# A token lives at most this long: a leaked one is not a permanent credential.
MAX_TTL_S = 30 * 24 * 3600
# Clock difference tolerated between the minter and this host.
LEEWAY_S = 5
MAX_PATTERNS = 32
MAX_PATTERN_CHARS = 256


class TokenRefused(Exception):
    """The token is not one of ours, or no longer valid (401); the message says why."""


class MintRefused(ValueError):
    """A token cannot be minted as asked (422); the message names the field at fault."""


class MintingUnavailable(Exception):
    """This service holds no signing secret (SHIELD_JWT_SECRET), so it cannot mint."""


def public_key_algorithm(pem: str) -> str:
    """The JWS algorithm a PEM public key verifies: RS256 or EdDSA; ValueError otherwise."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM public key: {error}") from None
    if isinstance(key, RSAPublicKey):
        return "RS256"
    if isinstance(key, Ed25519PublicKey | Ed448PublicKey):
        return "EdDSA"
    raise ValueError("must be an RSA or Ed25519/Ed448 public key")


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    expires_at: datetime


def _patterns(claims: dict[str, Any], name: str) -> list[str] | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise TokenRefused(f"claim {name!r} must be a list")
    try:
        return check_patterns(name, value)
    except MintRefused as error:
        raise TokenRefused(f"claim {error}") from None


def _is_pattern(item: object) -> bool:
    return (
        isinstance(item, str)
        and 0 < len(item) <= MAX_PATTERN_CHARS
        and item.isprintable()
        and item.strip() == item
    )


def check_patterns(name: str, patterns: Iterable[str] | None) -> list[str] | None:
    """Patterns a minter may put in a token; MintRefused naming the claim otherwise."""
    if patterns is None:
        return None
    listed = list(patterns)
    if len(listed) > MAX_PATTERNS or not all(_is_pattern(item) for item in listed):
        raise MintRefused(
            f"{name}: at most {MAX_PATTERNS} printable names of 1-{MAX_PATTERN_CHARS} characters"
        )
    return listed


class TokenAuthority:
    """Mints and verifies the service's scoped tokens with the configured keys."""

    def __init__(
        self, audience: str, secret: str | None = None, public_key_pem: str | None = None
    ) -> None:
        self._audience = audience
        self._secret = secret
        self._keys: dict[str, Any] = {}
        if secret is not None:
            self._keys[HMAC_ALGORITHM] = secret
        if public_key_pem is not None:
            self._keys[public_key_algorithm(public_key_pem)] = load_pem_public_key(
                public_key_pem.encode()
            )

    @property
    def can_mint(self) -> bool:
        return self._secret is not None

    def mint(
        self,
        scope: str,
        ttl_s: int,
        jobs: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        now: datetime | None = None,
    ) -> MintedToken:
        """A token for these scopes, valid for ttl_s; MintRefused for what cannot be honoured."""
        if self._secret is None:
            raise MintingUnavailable("minting needs SHIELD_JWT_SECRET")
        try:
            scopes = parse_scopes(scope, strict=True)
        except ValueError as error:
            raise MintRefused(f"scope: {error}") from None
        if not scopes:
            raise MintRefused("scope: name at least one scope")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise MintRefused(f"ttl: must be between 1 and {MAX_TTL_S} seconds")
        job_patterns = check_patterns("jobs", jobs)
        type_patterns = check_patterns("types", types)
        if Scope.ADMIN in scopes and (job_patterns is not None or type_patterns is not None):
            raise MintRefused("scope: an admin token cannot be limited to jobs or types")
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires_at = issued + timedelta(seconds=ttl_s)
        claims: dict[str, Any] = {
            "aud": self._audience,
            "iat": issued,
            "exp": expires_at,
            "scope": " ".join(sorted(scopes)),
        }
        if job_patterns is not None:
            claims["jobs"] = job_patterns
        if type_patterns is not None:
            claims["types"] = type_patterns
        token = jwt.encode(claims, self._secret, algorithm=HMAC_ALGORITHM)
        return MintedToken(token=token, expires_at=expires_at)

    def verify(self, token: str) -> Grant:
        """The grant a token carries; TokenRefused when it is not valid here."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as error:
            raise TokenRefused(f"not a JWT: {error}") from None
        if not isinstance(algorithm, str) or algorithm not in self._keys:
            raise TokenRefused(f"algorithm {algorithm!r} is not accepted here")
        key = self._keys[algorithm]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                leeway=LEEWAY_S,
                options={"require": ["exp", "aud", "scope"]},
            )
        except jwt.PyJWTError as error:
            raise TokenRefused(str(error)) from None
        if not isinstance(claims.get("scope"), str):
            raise TokenRefused("claim 'scope' must be a space-separated string")
        return Grant.of(
            parse_scopes(claims["scope"], strict=False),
            jobs=_patterns(claims, "jobs"),
            types=_patterns(claims, "types"),
        )
