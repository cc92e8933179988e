"""Service settings from SHIELD_* environment variables or an env file, validated once at start."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core import names
from service.core.handler_spec import parse_handler_spec
from service.core.server_names import normalize_server_name
from service.core.tokens import public_key_algorithm

ENV_PREFIX = "SHIELD_"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

PositiveInt = Annotated[int, Field(gt=0)]
# A browser origin exactly as the Origin header spells it: scheme, host and port, no path.
CorsOrigin = Annotated[str, Field(pattern=r"^(\*|https?://[^/\s?#]+)$")]
# A name clients reach the API by, as a Host header spells it: host or host:port.
ServerName = Annotated[str, Field(pattern=r"^[^/\s?#@*]+$")]
# HS256 is only as strong as its secret: at least 256 bits, as RFC 7518 asks.
JWT_SECRET_MIN_CHARS = 32
DEFAULT_JWT_AUDIENCE = "shield-orchestrator"


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the environment variable."""


class Settings(BaseSettings):
    """Everything the API and the worker read from the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: SecretStr | None = None
    # Redis ACL users (infra creates them, service.core.redis_acl): the API connects as
    # redis_username; a worker as redis_worker_username with its own password, when set.
    redis_username: str | None = Field(default=None, min_length=1)
    redis_worker_username: str | None = Field(default=None, min_length=1)
    redis_worker_password: SecretStr | None = None
    stream_ingestion: str = Field(default=names.INGESTION_STREAM, min_length=1)
    stream_events: str = Field(default=names.EVENTS_STREAM, min_length=1)
    stream_maxlen: PositiveInt = 10000
    batch_size: PositiveInt = 10
    block_ms: PositiveInt = 5000
    retry_attempts: PositiveInt = 3
    claim_idle_ms: PositiveInt = 60000
    lease_max_ms: PositiveInt = 3_600_000
    # Required by the worker (it refuses to start without one); the API never calls it.
    task_handler: str = ""
    handler_token: SecretStr | None = None
    handler_timeout_s: float = Field(default=300.0, gt=0)
    # The n-th retry waits 0.5-1x of min(retry_backoff_max_ms, retry_backoff_ms * 2^(n-1)).
    retry_backoff_ms: PositiveInt = 1000
    retry_backoff_max_ms: PositiveInt = 300_000
    worker_concurrency: PositiveInt = 8
    # Calls per second to the handler across every worker on every host; 0 is unlimited.
    handler_rate_per_s: float = Field(default=0.0, ge=0)
    api_token: SecretStr | None = None
    max_event_bytes: PositiveInt = 65536
    ingestion_groups: tuple[str, ...] = names.INGESTION_GROUPS
    event_groups: tuple[str, ...] = names.EVENT_GROUPS
    worker_group: str = names.WORKER_GROUP
    sse_ping_s: float = Field(default=15.0, gt=0, le=15.0)
    client_buffer_events: PositiveInt = 1000
    client_buffer_bytes: PositiveInt = 1_048_576
    redis_max_connections: PositiveInt = 50
    # Replay (history before a client joins the live feed): pages of about this many bytes,
    # at most this many read at once per process over a pool of their own, so clients
    # catching up can neither exhaust memory nor take the connections that writes need.
    replay_page_bytes: int = Field(default=262_144, ge=4096, le=16_777_216)
    replay_concurrency: int = Field(default=8, ge=1, le=256)
    # A WebSocket that has not taken a message for this long is closed with a notice naming
    # its resume id, as a slow SSE client is.
    ws_send_timeout_s: float = Field(default=30.0, gt=0, le=600.0)
    # Sentinel mode: with sentinels set, redis_url gives only the db, TLS and password.
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = ()
    redis_sentinel_master: str = Field(default=names.SENTINEL_MASTER, min_length=1)
    # POST /tasks answers 201 only once this many replicas have the task (WAIT).
    task_replicas: int = Field(default=0, ge=0)
    task_replica_timeout_ms: PositiveInt = 1000
    cors_origins: tuple[CorsOrigin, ...] = ()
    # The names (host or host:port, a JSON list) browsers reach this API by: a page of one of
    # them is same-origin for the WebSocket check. Empty: only loopback names are our own.
    server_names: tuple[ServerName, ...] = ()
    # Scoped tokens (JWT): HS256 with the secret, and/or RS256 or EdDSA with the PEM public key.
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_audience: str = Field(default=DEFAULT_JWT_AUDIENCE, min_length=1)
    # Jobs (POST /jobs): chunks per job at most (413 past it), the body size of POST /jobs
    # (every other route keeps max_event_bytes), and how long a finished job is kept.
    max_job_chunks: PositiveInt = 10_000
    max_job_bytes: PositiveInt = 32 * 1024 * 1024
    job_ttl_s: PositiveInt = 7 * 24 * 3600
    # How long an Idempotency-Key's first answer is kept, to be given again.
    idempotency_ttl_s: PositiveInt = 24 * 3600

    @field_validator("redis_url")
    @classmethod
    def _redis_url_has_scheme(cls, value: str) -> str:
        if not value.startswith(_REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        """host:port,host:port as the README says, or a JSON list as the env file writes it."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port")
        return value

    @field_validator("server_names")
    @classmethod
    def _server_names_are_host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalize_server_name(name) for name in value)

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < JWT_SECRET_MIN_CHARS:
            raise ValueError(f"must be at least {JWT_SECRET_MIN_CHARS} characters")
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _jwt_public_key_is_usable(cls, value: str | None) -> str | None:
        if value:
            public_key_algorithm(value)
        return value or None

    @field_validator("task_handler")
    @classmethod
    def _handler_has_a_known_form(cls, value: str) -> str:
        if value:
            parse_handler_spec(value)
        return value

    @field_validator("ingestion_groups", "event_groups")
    @classmethod
    def _groups_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not group for group in value):
            raise ValueError("must be a non-empty list of non-empty group names")
        return value

    @field_validator("worker_group")
    @classmethod
    def _worker_group_is_an_ingestion_group(cls, value: str, info: ValidationInfo) -> str:
        if value not in info.data.get("ingestion_groups", ()):
            raise ValueError("must be one of the ingestion groups")
        return value

    @property
    def auth_configured(self) -> bool:
        """True when some credential is required: the static token or scoped tokens."""
        return any(v is not None for v in (self.api_token, self.jwt_secret, self.jwt_public_key))

    def for_worker(self) -> Settings:
        """The settings a worker connects with: the worker's Redis user, when one is set."""
        if self.redis_worker_username is None:
            return self
        return self.model_copy(
            update={
                "redis_username": self.redis_worker_username,
                "redis_password": self.redis_worker_password,
            }
        )

    @property
    def dead_letter_stream(self) -> str:
        return names.dead_letter_stream(self.stream_ingestion)

    @property
    def worker_counters_key(self) -> str:
        return names.worker_counters_key(self.stream_ingestion)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs."""
        pairs = [address.rpartition(":") for address in self.redis_sentinels]
        return [(host.strip("[]"), int(port)) for host, _, port in pairs]


def describe_validation_error(error: ValidationError) -> str:
    """Fold a pydantic error into one line that names the environment variable at fault."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    return f"{ENV_PREFIX}{field.upper()}: {first['msg']}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings once, raising ConfigError with a one-line message on bad input."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None
