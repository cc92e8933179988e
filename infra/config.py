"""The stack's settings: read once from Pulumi config, validated, with errors that name the key."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, get_args

import pulumi
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from infra.artifacts import REPO_ROOT
from service.core.consumer_groups import GroupSpec, group_plan
from service.core.handler_spec import ACCEPTED_FORMS, HandlerKind, parse_handler_spec
from service.core.redis_acl import API_USER, WORKER_USER, StreamNames
from service.core.settings import ENV_PREFIX, Settings

PROJECT = "shield-orchestrator"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,200}$")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Items of the other list settings (CORS origins, sentinels): Settings checks their form.
_LIST_ITEM = re.compile(r"^[^\s,]{1,255}$")
_GROUP_FIELDS = ("ingestion_groups", "event_groups")
_ABSOLUTE_PATH = re.compile(r"^/[A-Za-z0-9_./-]*$")
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}(\.\d{1,2})?$")
_PLATFORM_TAG = re.compile(r"^[a-z0-9_]+$")
_HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+$")
# A wheel's file name, and one requirement line (a name, extras, markers, a version; no pip
# options, no paths), for handlerPath and handlerRequirements.
_WHEEL = re.compile(r"^[A-Za-z0-9_.]+-[A-Za-z0-9_.+!]+(-[A-Za-z0-9_.]+){2,3}\.whl$")
_REQUIREMENT = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?[ A-Za-z0-9._<>=!~,;'\"()*+-]*$"
)
# The hosts install with --require-hashes: each handlerRequirements line is a pin with the
# sha256 of every file it may install, as `uv pip compile --generate-hashes` writes it.
_HASH_OPTION = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")
_HASH_HINT = (
    "name==version --hash=sha256:<hex> (the hosts install with --require-hashes; "
    "`uv pip compile --generate-hashes` prints such lines)"
)
PACKAGE_SOURCES = ("wheelhouse", "index")
# The stack keys that list hosts, each entry with its own optional hostKey.
_LIST_KEYS = ("orchestrators", "workerHosts", "redisReplicas")
REDIS_MODES = ("single", "sentinel")
# edgeProxy: nginx (the default: a TLS + HTTP/2 front on every API host, the API on loopback)
# or none (the API processes serve clients themselves, for stacks with a front of their own).
EDGE_PROXIES = ("nginx", "none")
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)
_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((RSA|EC) )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]+"
    r"-----END ((RSA|EC) )?PRIVATE KEY-----"
)
SENTINEL_PORT = 26379
# Limits that keep a typo from deploying hundreds of processes.
MAX_PROCESSES = 32


class StackConfigError(pulumi.RunError):
    """A stack setting is missing or invalid; the message names the key."""


class ConfigSource(Protocol):
    """The part of pulumi.Config that load() reads."""

    def get(self, key: str) -> str | None: ...

    def get_secret(self, key: str) -> pulumi.Output[str] | None: ...


@dataclass(frozen=True)
class SshTarget:
    """How to reach one host over SSH."""

    host: str
    port: int
    user: str
    host_key: str | None
    # The stack key that pins host_key, for the messages that ask to change it.
    host_key_setting: str = "hostKeys"

    @property
    def use_sudo(self) -> bool:
        return self.user != "root"

    @property
    def pin_hint(self) -> str:
        """Where to pin this host's key, for messages."""
        if self.host_key_setting in _LIST_KEYS:
            return f"hostKey in its {self.host_key_setting} entry (or hostKeys)"
        return self.host_key_setting


@dataclass(frozen=True)
class Bastion:
    host: str
    port: int
    user: str
    host_key: str | None
    host_key_setting: str = "bastionHostKey"


@dataclass(frozen=True)
class RedisAccess:
    """What the stack sets on the Redis it points at; all off by default."""

    # The service's two ACL users (redisApiPassword and redisWorkerPassword are set).
    acl_users: bool = False
    disable_default_user: bool = False
    # maxmemory as Redis spells it (256mb), with maxmemory-policy noeviction; None: untouched.
    maxmemory: str | None = None
    # The Redis's own systemd unit on its host, which ours follows.
    redis_unit: str = "redis-server.service"
    # The service's streams, for the users' key patterns.
    streams: StreamNames = StreamNames()

    @property
    def enabled(self) -> bool:
        return self.acl_users or self.maxmemory is not None


@dataclass(frozen=True)
class RedisSettings:
    """Where one Redis node is, for redis-cli on its host, and what the service keeps there."""

    host: str
    port: int
    db: int
    # The service's Redis URL (never with a password).
    url: str
    streams: tuple[str, str]
    # The dead-letter stream and the workers' counters, which belong to the task stream.
    companion_keys: tuple[str, str]
    # Every (stream, group, start id), as the service itself would create them.
    groups: tuple[GroupSpec, ...]
    # What the stack sets on the Redis: ACL users, the default user, maxmemory.
    access: RedisAccess = RedisAccess()

    @property
    def address(self) -> str:
        """The Redis address the service uses, never with a password."""
        return self.url


@dataclass(frozen=True)
class ServiceSettings:
    """What every host of the service shares: names, paths, the first port, the user."""

    bind_address: str
    port: int
    install_dir: str
    config_dir: str
    user: str
    unit_name: str
    health_timeout_s: int
    # LimitNOFILE of every unit (the bench's 1,000 clients need more than the default 1,024).
    open_files: int = 65536
    # uvicorn --limit-concurrency per API process: beyond it, the process answers 503.
    api_concurrency: int = 2048


@dataclass(frozen=True)
class EdgeSettings:
    """The nginx front on every API host (edgeProxy nginx): its port and its limits."""

    port: int
    # Per client address, counted once its request header is in (limit_conn).
    connections_per_client: int
    # The whole request header must arrive within this time (slow-header clients).
    header_timeout_s: int
    # The longest request line or header line; longer ones get 400/414 from nginx.
    header_line_bytes: int
    # The service's own body limits, so nginx refuses larger bodies first: maxEventBytes on
    # every route, maxJobBytes on POST /jobs (a whole document).
    max_body_bytes: int
    max_job_body_bytes: int
    # How long an SSE or WebSocket stream may stay silent upstream (pings come every 15 s).
    read_timeout_s: int
    # LimitNOFILE of the front's unit and nginx's worker_rlimit_nofile (openFilesLimit).
    open_files: int


@dataclass(frozen=True)
class AppHost:
    """One host that runs API processes (one systemd instance per port) and workers."""

    name: str
    target: SshTarget
    public_host: str
    bind_address: str
    api_ports: tuple[int, ...]
    worker_processes: int
    # Where the front listens on this host (None: no front, clients reach each process).
    edge_address: str | None = None
    edge_port: int = 443
    # The names the front answers to; any other Host gets 421.
    server_names: tuple[str, ...] = ()

    @property
    def base_urls(self) -> tuple[str, ...]:
        if self.edge_address is not None:
            port = "" if self.edge_port == 443 else f":{self.edge_port}"
            return (f"https://{self.public_host}{port}",)
        return tuple(f"http://{self.public_host}:{port}" for port in self.api_ports)

    @property
    def health_urls(self) -> tuple[str, ...]:
        host = "127.0.0.1" if self.bind_address in ("0.0.0.0", "::") else self.bind_address
        return tuple(f"http://{host}:{port}/health/detailed" for port in self.api_ports)


@dataclass(frozen=True)
class RedisNode:
    """A Redis data node: the configured primary (replica_of None) or a replica."""

    name: str
    target: SshTarget
    host: str
    port: int
    replica_of: tuple[str, int] | None


@dataclass(frozen=True)
class SentinelHost:
    name: str
    target: SshTarget
    host: str
    port: int


@dataclass(frozen=True)
class Topology:
    """Which hosts run what. Single mode has no replicas and no sentinels."""

    app_hosts: tuple[AppHost, ...]
    primary: RedisNode
    mode: str
    replicas: tuple[RedisNode, ...]
    sentinels: tuple[SentinelHost, ...]
    sentinel_master: str
    sentinel_quorum: int

    @property
    def api_hosts(self) -> tuple[AppHost, ...]:
        return tuple(host for host in self.app_hosts if host.api_ports)

    def hosts(self) -> dict[str, SshTarget]:
        """Every host of the stack once, by address, in the order of its first role."""
        found: dict[str, SshTarget] = {}
        for address, target in (
            *((host.public_host, host.target) for host in self.app_hosts),
            (self.primary.host, self.primary.target),
            *((node.host, node.target) for node in self.replicas),
            *((sentinel.host, sentinel.target) for sentinel in self.sentinels),
        ):
            found.setdefault(address, target)
        return found

    def roles(self, address: str) -> tuple[str, ...]:
        """What a host runs, for messages: orchestrator, worker, redis, redis replica, sentinel."""
        found = [
            "orchestrator" if host.api_ports else "worker"
            for host in self.app_hosts
            if host.public_host == address
        ]
        found += ["redis"] if self.primary.host == address else []
        found += ["redis replica" for node in self.replicas if node.host == address]
        found += ["sentinel" for sentinel in self.sentinels if sentinel.host == address]
        return tuple(found)


@dataclass(frozen=True)
class PackageSettings:
    source: str
    index_url: str | None
    python_version: str
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class HandlerCode:
    """The handler the stack ships (handlerPath, handlerRequirements) for a python: handler."""

    # A directory (it goes into the release, on the worker's import path) or a wheel (it
    # goes into the wheelhouse and the venv); None when only requirements are added.
    path: Path | None
    requirements: tuple[str, ...]

    @property
    def wheel(self) -> Path | None:
        return self.path if self.path is not None and self.path.suffix == ".whl" else None

    @property
    def directory(self) -> Path | None:
        return self.path if self.path is not None and self.path.is_dir() else None

    @property
    def requirement_lines(self) -> tuple[str, ...]:
        """What the venv installs besides the service: the wheel's own pin, then the lines."""
        own: tuple[str, ...] = ()
        if self.wheel is not None:
            # The wheel is the project's own file: its hash is the one we ship.
            name, version = self.wheel.name.split("-")[:2]
            digest = hashlib.sha256(self.wheel.read_bytes()).hexdigest()
            own = (f"{name}=={version} --hash=sha256:{digest}",)
        return (*own, *self.requirements)


@dataclass(frozen=True)
class StackConfig:
    bastion: Bastion | None
    # The primary's Redis, as the service and the group plan see it.
    redis: RedisSettings
    # The service's own settings (service.core.settings.Settings), built and validated here.
    app: Settings
    service: ServiceSettings
    packages: PackageSettings
    install_os_packages: bool
    drop_streams_on_destroy: bool
    topology: Topology
    handler: HandlerCode = HandlerCode(None, ())
    # None with edgeProxy none.
    edge: EdgeSettings | None = None


@dataclass(frozen=True)
class StackSecrets:
    """Secret settings; they stay Outputs so Pulumi keeps them encrypted."""

    ssh_private_key: pulumi.Output[str]
    bastion_private_key: pulumi.Output[str] | None
    # The service's secret settings that the stack sets, by Settings field name
    # (redis_password, api_token, ...); each goes to the env file, never on a command line.
    service: dict[str, pulumi.Output[str]]
    # The deploy's own Redis password (redisPassword) when the service has ACL users of its
    # own (redisApiPassword, redisWorkerPassword); else the service's is the deploy's.
    redis_admin_password: pulumi.Output[str] | None = None
    # The service users' passwords, for the step that sets them (API's, then workers').
    redis_user_passwords: tuple[pulumi.Output[str], ...] = ()
    # The front's certificate (chain) and key, PEM, each checked when its value is known.
    tls_certificate: pulumi.Output[str] | None = None
    tls_private_key: pulumi.Output[str] | None = None

    @property
    def redis_password(self) -> pulumi.Output[str] | None:
        if self.redis_admin_password is not None:
            return self.redis_admin_password
        return self.service.get("redis_password")


class _Reader:
    """Typed, validated access to config values, naming the full key on error."""

    def __init__(self, source: ConfigSource) -> None:
        self._source = source

    def fail(self, key: str, problem: str) -> StackConfigError:
        return StackConfigError(f"{PROJECT}:{key}: {problem}")

    def text(
        self, key: str, default: str | None = None, pattern: re.Pattern[str] | None = None
    ) -> str:
        value = self._source.get(key)
        if value is None or value == "":
            if default is None:
                raise self.fail(key, "is required (pulumi config set " + key + " ...)")
            return default
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"invalid value {value!r}")
        return value

    def optional(self, key: str, pattern: re.Pattern[str] | None = None) -> str | None:
        value = self._source.get(key)
        if not value:
            return None
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"invalid value {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        raw = self._source.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.fail(key, f"must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self._source.get(key)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise self.fail(key, f"must be true or false, got {raw!r}")

    def host(self, key: str, default: str | None = None) -> str:
        value = self.text(key, default)
        if not _is_host(value):
            raise self.fail(key, f"not a hostname or IP address: {value!r}")
        return value

    def names(
        self, key: str, default: tuple[str, ...], pattern: re.Pattern[str]
    ) -> tuple[str, ...]:
        raw = self._source.get(key)
        if raw is None or raw == "":
            return default
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = [item.strip() for item in raw.split(",")]
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) for item in value)
        ):
            raise self.fail(key, "must be a non-empty list of names")
        for item in value:
            if not pattern.match(item):
                raise self.fail(key, f"invalid name {item!r}")
        if len(set(value)) != len(value):
            raise self.fail(key, "names must be unique")
        return tuple(value)

    def host_keys(self) -> dict[str, str]:
        """`hostKeys`: a JSON object of address -> SSH host key, for hosts without their own."""
        raw = self._source.get("hostKeys")
        if raw is None or raw == "":
            return {}
        try:
            value: Any = json.loads(raw)
        except ValueError:
            raise self.fail("hostKeys", "must be a JSON object of host: key") from None
        if not isinstance(value, dict):
            raise self.fail("hostKeys", "must be a JSON object of host: key")
        for host, key in value.items():
            if not isinstance(key, str) or not _HOST_KEY.match(key):
                raise self.fail("hostKeys", f"{host}: invalid host key")
        return value

    def records(self, key: str) -> list[dict[str, Any]]:
        """A JSON list of objects, or [] when the key is not set."""
        raw = self._source.get(key)
        if raw is None or raw == "":
            return []
        try:
            value: Any = json.loads(raw)
        except ValueError:
            raise self.fail(key, "must be a JSON list of objects") from None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(key, "must be a JSON list of objects")
        return value

    def secret(self, key: str) -> pulumi.Output[str] | None:
        return self._source.get_secret(key)

    def required_secret(self, key: str) -> pulumi.Output[str]:
        value = self._source.get_secret(key)
        if value is None:
            raise self.fail(key, f"is required (pulumi config set --secret {key} < file)")
        return value


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(_HOSTNAME.match(value))
    return True


def _redis_url(reader: _Reader, host: str, port: int, db: int) -> str:
    url = reader.optional("redisUrl")
    if url is None:
        return f"redis://{host}:{port}/{db}"
    if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        raise reader.fail("redisUrl", "must not hold credentials: set redisPassword as a secret")
    return url


# The service's secrets reach its env file from Pulumi secrets, never from plain stack config.
SECRET_FIELDS = tuple(
    name for name, field in Settings.model_fields.items() if SecretStr in get_args(field.annotation)
)


def stack_key(field: str) -> str:
    """The stack config key of a Settings field: batch_size -> batchSize."""
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


def env_name(field: str) -> str:
    """The environment variable of a Settings field: batch_size -> SHIELD_BATCH_SIZE."""
    return ENV_PREFIX + field.upper()


def _is_tuple(field: str) -> bool:
    return "tuple" in str(Settings.model_fields[field].annotation)


# Settings the stack derives (the URL from redisHost, the ACL user names from
# redisApiPassword/redisWorkerPassword), never read from keys of their own.
_INFRA_FIELDS = ("redis_url", "redis_username", "redis_worker_username")


class _StackOnlySettings(Settings):
    """Settings that read only the values given: not this machine's SHIELD_* nor a .env file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def app_settings(
    reader: _Reader, redis_url: str, implied: dict[str, object] | None = None
) -> Settings:
    """The service's Settings from the stack config: each field's key is its camelCase name.

    Settings owns the defaults and the ranges; a value it rejects fails here, naming the key.
    """
    values: dict[str, object] = {"redis_url": redis_url, **(implied or {})}
    for field in Settings.model_fields:
        if field in SECRET_FIELDS or field in _INFRA_FIELDS:
            continue
        key = stack_key(field)
        if _is_tuple(field):
            listed = reader.names(key, (), _GROUP_NAME if field in _GROUP_FIELDS else _LIST_ITEM)
            if listed:
                values[field] = listed
            continue
        raw = reader.optional(key)
        if raw is not None:
            values[field] = raw
    try:
        validated = _StackOnlySettings(**values)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise reader.fail(stack_key(field), first["msg"]) from None
    return Settings.model_construct(_fields_set=validated.model_fields_set, **dict(validated))


def load(source: ConfigSource, root: Path = REPO_ROOT) -> tuple[StackConfig, StackSecrets]:
    """Read and validate every setting of the stack; root is where relative paths start."""
    read = _Reader(source)
    ssh = _SshDefaults(
        user=read.text("sshUser", "root", _UNIX_NAME),
        port=read.integer("sshPort", 22, 1, 65535),
        host_keys=read.host_keys(),
    )
    bastion_host = read.optional("bastionHost")
    bastion = None
    if bastion_host is not None:
        bastion = Bastion(
            host=read.host("bastionHost"),
            port=read.integer("bastionPort", 22, 1, 65535),
            user=read.text("bastionUser", ssh.user, _UNIX_NAME),
            host_key=read.optional("bastionHostKey", _HOST_KEY),
        )
    primary = _primary_entry(read, ssh)
    redis_port = read.integer("redisPort", 6379, 1, 65535)
    redis_db = read.integer("redisDb", 0, 0, 15)
    mode = read.text("redisMode", "single")
    if mode not in REDIS_MODES:
        raise read.fail("redisMode", f"must be one of {', '.join(REDIS_MODES)}")
    # With replicas, a task is accepted only once one of them has it (the service's WAIT).
    implied: dict[str, object] = {"task_replicas": 1} if mode == "sentinel" else {}
    access = redis_access(read, mode)
    if access.acl_users:
        implied.update(redis_username=API_USER, redis_worker_username=WORKER_USER)
    app = app_settings(read, _redis_url(read, primary.host, redis_port, redis_db), implied)
    access = dataclasses.replace(
        access, streams=StreamNames(app.stream_ingestion, app.stream_events)
    )
    if app.stream_ingestion == app.stream_events:
        raise read.fail("streamEvents", "must differ from streamIngestion")
    edge_proxy = read.text("edgeProxy", "nginx")
    if edge_proxy not in EDGE_PROXIES:
        raise read.fail("edgeProxy", f"must be one of {', '.join(EDGE_PROXIES)}")
    service = ServiceSettings(
        # Behind the front the API listens on loopback only; without it, where users reach it.
        bind_address=read.host(
            "serviceBindAddress", "127.0.0.1" if edge_proxy == "nginx" else "0.0.0.0"
        ),
        port=read.integer("servicePort", 8000, 1, 65535),
        install_dir=read.text("installDir", "/opt/shield-orchestrator", _ABSOLUTE_PATH),
        config_dir=read.text("configDir", "/etc/shield-orchestrator", _ABSOLUTE_PATH),
        user=read.text("serviceUser", "shield", _UNIX_NAME),
        unit_name=read.text("serviceName", "shield-orchestrator", _UNIT_NAME),
        health_timeout_s=read.integer("healthTimeoutSeconds", 90, 5, 3600),
        open_files=read.integer("openFilesLimit", 65536, 1024, 1_048_576),
        api_concurrency=read.integer("apiConcurrencyLimit", 2048, 16, 1_000_000),
    )
    source_kind = read.text("packageSource", "wheelhouse")
    if source_kind not in PACKAGE_SOURCES:
        raise read.fail("packageSource", f"must be one of {', '.join(PACKAGE_SOURCES)}")
    packages = PackageSettings(
        source=source_kind,
        index_url=read.optional("packageIndexUrl"),
        # Debian 12's Python. The micro version matters: markers such as
        # python_full_version < "3.11.3" decide which wheels the target needs.
        python_version=read.text("targetPythonVersion", "3.11.2", _PYTHON_VERSION),
        platforms=read.names(
            "targetPlatforms", ("manylinux2014_x86_64", "manylinux_2_28_x86_64"), _PLATFORM_TAG
        ),
    )
    redis = redis_settings(app, primary.host, redis_port, redis_db, access)
    topology = load_topology(read, ssh, primary, redis, app, service)
    edge = None
    if edge_proxy == "nginx":
        edge = edge_settings(read, app, service)
        topology = _behind_the_front(read, topology, app, edge, service)
    config = StackConfig(
        bastion=bastion,
        redis=redis,
        app=app,
        service=service,
        packages=packages,
        install_os_packages=read.boolean("installOsPackages", True),
        drop_streams_on_destroy=read.boolean("dropStreamsOnDestroy", False),
        topology=topology,
        handler=handler_code(read, app, packages, root),
        edge=edge,
    )
    secrets = StackSecrets(
        ssh_private_key=read.required_secret("sshPrivateKey"),
        bastion_private_key=read.secret("bastionPrivateKey"),
        **redis_user_secrets(read, access),
    )
    if edge is not None:
        secrets = dataclasses.replace(
            secrets,
            tls_certificate=_pem_secret(read, "tlsCertificate", _PEM_CERTIFICATE, "a certificate"),
            tls_private_key=_pem_secret(read, "tlsPrivateKey", _PEM_PRIVATE_KEY, "a private key"),
        )
    _require_a_handler(read, config)
    _require_safe_edges(read, config, secrets)
    return config, secrets


def edge_settings(read: _Reader, app: Settings, service: ServiceSettings) -> EdgeSettings:
    """The front's port and limits (edgeProxy nginx), each with a default that suits the bench's
    1,000 clients."""
    return EdgeSettings(
        port=read.integer("edgePort", 443, 1, 65535),
        connections_per_client=read.integer("edgeConnectionsPerClient", 1100, 1, 1_000_000),
        header_timeout_s=read.integer("edgeHeaderTimeoutSeconds", 10, 1, 300),
        header_line_bytes=read.integer("edgeHeaderLineBytes", 16384, 1024, 1_048_576),
        max_body_bytes=app.max_event_bytes,
        max_job_body_bytes=app.max_job_bytes,
        read_timeout_s=read.integer("edgeReadTimeoutSeconds", 3600, 30, 86400),
        open_files=service.open_files,
    )


def _behind_the_front(
    read: _Reader, topology: Topology, app: Settings, edge: EdgeSettings, service: ServiceSettings
) -> Topology:
    """Each API host gets the front: its listen address and names; its API stays on loopback."""
    listen = {
        entry["host"]: entry.get("listenAddress")
        for entry in read.records("orchestrators")
        if isinstance(entry.get("host"), str)
    }
    single = read.optional("edgeListenAddress")
    names = tuple(dict.fromkeys(_name_only(name) for name in app.server_names))
    hosts = []
    for host in topology.app_hosts:
        if not host.api_ports:
            hosts.append(host)
            continue
        if not _is_loopback(host.bind_address):
            key = (
                "serviceBindAddress"
                if host.bind_address == service.bind_address
                else "orchestrators"
            )
            raise read.fail(
                key,
                f"the API on {host.public_host} must listen on loopback behind the front"
                f" (edgeProxy nginx), not on {host.bind_address}; or set edgeProxy to none",
            )
        own = listen.get(host.public_host)
        address = own or single or _default_listen(host.public_host)
        if not isinstance(address, str) or not (address == "*" or _is_host(address)):
            key = "orchestrators" if own else "edgeListenAddress"
            raise read.fail(key, f"{host.public_host}: invalid listenAddress {address!r}")
        hosts.append(
            dataclasses.replace(
                host,
                edge_address=address,
                edge_port=edge.port,
                server_names=names or (host.public_host,),
            )
        )
    return dataclasses.replace(topology, app_hosts=tuple(hosts))


def _name_only(server_name: str) -> str:
    """A serverNames entry without its port, as nginx's server_name takes it."""
    if server_name.startswith("["):
        return server_name[: server_name.index("]") + 1]
    return server_name.split(":", 1)[0]


def _default_listen(public_host: str) -> str:
    """The host's own address when the stack names it by one, else every address."""
    try:
        ipaddress.ip_address(public_host)
    except ValueError:
        return "*"
    return public_host


def _pem_secret(read: _Reader, key: str, pattern: re.Pattern[str], what: str) -> pulumi.Output[str]:
    """A required PEM secret, checked once its value is known, failing with the key's name."""
    value = read.secret(key)
    if value is None:
        raise read.fail(
            key,
            "is required for the TLS front (edgeProxy nginx): pulumi config set --secret"
            f" {key} < file.pem; or set edgeProxy to none if you run your own front",
        )

    checked: pulumi.Output[str] = value.apply(lambda text: check_pem(key, text, pattern, what))
    return pulumi.Output.secret(checked)


def check_pem(key: str, text: str | None, pattern: re.Pattern[str], what: str) -> str:
    """text if it holds what (a certificate, a private key) in PEM form; else fail naming key."""
    if not text or not pattern.search(text):
        raise StackConfigError(f"{PROJECT}:{key}: is not {what} in PEM form")
    return text


def _require_safe_edges(read: _Reader, config: StackConfig, secrets: StackSecrets) -> None:
    """No open API beyond loopback, and no host whose SSH key nobody pinned (unless the stack
    says allowUnpinnedHostKeys: true, which still warns)."""
    if "api_token" not in secrets.service:
        for host in config.topology.api_hosts:
            if host.edge_address is not None and not _is_loopback(host.edge_address):
                raise read.fail(
                    "apiToken",
                    f"is required: the front on {host.public_host} listens on"
                    f" {host.edge_address} (beyond loopback) with no authentication; set it with"
                    " `pulumi config set --secret apiToken`",
                )
            if not _is_loopback(host.bind_address):
                key = (
                    "serviceBindAddress"
                    if host.bind_address == config.service.bind_address
                    else "orchestrators"
                )
                raise read.fail(
                    "apiToken",
                    f"is required: the API on {host.public_host} listens on {host.bind_address}"
                    f" (beyond loopback) with no authentication; set it with"
                    f" `pulumi config set --secret apiToken`, or bind to 127.0.0.1 ({key})",
                )
    if read.boolean("allowUnpinnedHostKeys", False):
        return
    for address, target in config.topology.hosts().items():
        if target.host_key is None:
            raise read.fail(
                target.host_key_setting,
                f"host {address} has no pinned SSH host key: set {target.pin_hint} to the line"
                " from `ssh-keyscan -t ed25519`, or allowUnpinnedHostKeys to true",
            )
    if config.bastion is not None and config.bastion.host_key is None:
        raise read.fail(
            "bastionHostKey",
            f"bastion {config.bastion.host} has no pinned SSH host key: set it to the line from"
            " `ssh-keyscan -t ed25519`, or allowUnpinnedHostKeys to true",
        )


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _require_a_handler(read: _Reader, config: StackConfig) -> None:
    """Workers with no handler would consume tasks nobody processes: refuse, naming the key."""
    workers = sum(host.worker_processes for host in config.topology.app_hosts)
    if workers and not config.app.task_handler:
        raise read.fail(
            "taskHandler",
            f"is required when the stack deploys workers: {ACCEPTED_FORMS};"
            " or set workerHosts to [] to deploy no worker (for external consumers)",
        )


def handler_code(
    read: _Reader, app: Settings, packages: PackageSettings, root: Path
) -> HandlerCode:
    """handlerPath (a directory or a wheel, relative to the project) and handlerRequirements."""
    raw_path = read.optional("handlerPath")
    path = None
    if raw_path is not None:
        path = (root / raw_path).resolve()
        if not (path.is_dir() or (path.is_file() and _WHEEL.match(path.name))):
            raise read.fail("handlerPath", f"{raw_path!r} is neither a directory nor a wheel")
        # Without a taskHandler at all, _require_a_handler names that key instead.
        kind = parse_handler_spec(app.task_handler).kind if app.task_handler else None
        if kind not in (HandlerKind.PYTHON, None):
            raise read.fail("handlerPath", "ships Python code: set taskHandler to python:m:f")
        if path.suffix == ".whl" and packages.source != "wheelhouse":
            raise read.fail("handlerPath", "a wheel needs packageSource wheelhouse")
    lines = _requirement_lines(read)
    return HandlerCode(path, lines)


def _requirement_lines(read: _Reader) -> tuple[str, ...]:
    raw = read.optional("handlerRequirements")
    if raw is None:
        return ()
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw.splitlines()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
        raise read.fail("handlerRequirements", "must be a list of requirement lines")
    lines = tuple(" ".join(line.split()) for line in value if line.strip())
    split = [_split_hashes(line) for line in lines]
    for line, (requirement, _) in zip(lines, split, strict=True):
        if not _REQUIREMENT.match(requirement):
            raise read.fail("handlerRequirements", f"not a requirement line: {line!r}")
    for line, (requirement, hashes) in zip(lines, split, strict=True):
        if "==" not in requirement or not hashes or not all(map(_HASH_OPTION.match, hashes)):
            raise read.fail("handlerRequirements", f"{line!r} must be {_HASH_HINT}")
    return lines


def _split_hashes(line: str) -> tuple[str, list[str]]:
    """A requirement line's requirement, and its --hash options."""
    requirement, marker, rest = line.partition(" --hash=")
    return requirement, [f"--hash={item}" for item in rest.split(" --hash=")] if marker else []


def service_secrets(read: _Reader) -> dict[str, pulumi.Output[str]]:
    """Each secret Settings field the stack sets, read as a Pulumi secret (its camelCase key)."""
    found = {}
    for field in SECRET_FIELDS:
        value = read.secret(stack_key(field))
        if value is not None:
            found[field] = value
    return found


_MAXMEMORY = re.compile(r"^[1-9][0-9]*(kb|mb|gb)?$", re.IGNORECASE)


def redis_access(read: _Reader, mode: str) -> RedisAccess:
    """redisApiPassword and redisWorkerPassword (both or neither), redisDisableDefaultUser,
    redisMaxmemory and redisSystemdUnit, checked against each other and the mode."""
    api, worker = read.secret("redisApiPassword"), read.secret("redisWorkerPassword")
    if (api is None) != (worker is None):
        missing = "redisWorkerPassword" if worker is None else "redisApiPassword"
        raise read.fail(missing, "is required with the other service user's password")
    acl_users = api is not None
    if acl_users and read.secret("redisPassword") is None:
        raise read.fail("redisPassword", "is required to create the ACL users")
    if acl_users and mode == "sentinel":
        raise read.fail(
            "redisApiPassword",
            "ACL users are not supported with redisMode sentinel: ACLs are not replicated,"
            " and replication and the sentinels authenticate as the default user",
        )
    disable_default = read.boolean("redisDisableDefaultUser", False)
    if disable_default and not acl_users:
        raise read.fail("redisDisableDefaultUser", "needs redisApiPassword and redisWorkerPassword")
    maxmemory = read.optional("redisMaxmemory", _MAXMEMORY)
    if maxmemory is not None and read.secret("redisPassword") is None:
        raise read.fail("redisPassword", "is required to set redisMaxmemory")
    return RedisAccess(
        acl_users=acl_users,
        disable_default_user=disable_default,
        maxmemory=maxmemory.lower() if maxmemory else None,
        redis_unit=read.text("redisSystemdUnit", "redis-server.service", _UNIT_NAME),
    )


def redis_user_secrets(read: _Reader, access: RedisAccess) -> dict[str, Any]:
    """The service's secrets; with ACL users, the API's Redis password is redisApiPassword
    and the deploy keeps redisPassword for itself."""
    service = service_secrets(read)
    if not access.acl_users:
        return {"service": service}
    api = read.required_secret("redisApiPassword")
    worker = read.required_secret("redisWorkerPassword")
    return {
        "service": {**service, "redis_password": api, "redis_worker_password": worker},
        "redis_admin_password": read.required_secret("redisPassword"),
        "redis_user_passwords": (api, worker),
    }


def redis_settings(
    app: Settings, host: str, port: int, db: int, access: RedisAccess | None = None
) -> RedisSettings:
    """What redis-cli on a node needs, and what the service keeps there, from its Settings."""
    return RedisSettings(
        host=host,
        port=port,
        db=db,
        url=app.redis_url,
        streams=(app.stream_ingestion, app.stream_events),
        companion_keys=(app.dead_letter_stream, app.worker_counters_key),
        groups=group_plan(app),
        access=access or RedisAccess(),
    )


@dataclass(frozen=True)
class _SshDefaults:
    user: str
    port: int
    host_keys: dict[str, str]


@dataclass(frozen=True)
class _HostEntry:
    """One host as the stack names it, whichever keys named it."""

    host: str
    target: SshTarget
    api_processes: int = 0
    bind_address: str = ""


def _target(
    ssh: _SshDefaults,
    host: str,
    host_key: str | None,
    setting: str,
    ssh_host: str | None = None,
    ssh_port: int | None = None,
) -> SshTarget:
    """A host's SSH target; without a key of its own, `hostKeys` may pin it."""
    if host_key is None and host in ssh.host_keys:
        host_key, setting = ssh.host_keys[host], "hostKeys"
    return SshTarget(ssh_host or host, ssh_port or ssh.port, ssh.user, host_key, setting)


def _primary_entry(read: _Reader, ssh: _SshDefaults) -> _HostEntry:
    """The Redis primary: redisHost, over redisSshHost:redisSshPort, pinned by redisHostKey."""
    host = read.host("redisHost")
    target = _target(
        ssh,
        host,
        read.optional("redisHostKey", _HOST_KEY),
        "redisHostKey",
        read.host("redisSshHost", host),
        read.integer("redisSshPort", ssh.port, 1, 65535),
    )
    return _HostEntry(host, target)


def _orchestrator_entries(read: _Reader, ssh: _SshDefaults, bind: str) -> list[_HostEntry]:
    """The `orchestrators` list; the single-host keys (orchestratorHost, orchestratorHostKey,
    orchestratorSshHost, orchestratorSshPort, apiProcesses) fold into a list of one."""
    listed = read.records("orchestrators")
    single = read.optional("orchestratorHost")
    host_key = read.optional("orchestratorHostKey", _HOST_KEY)
    if not listed:
        host = read.host("orchestratorHost")
        target = _target(
            ssh,
            host,
            host_key,
            "orchestratorHostKey",
            read.host("orchestratorSshHost", host),
            read.integer("orchestratorSshPort", ssh.port, 1, 65535),
        )
        return [_HostEntry(host, target, read.integer("apiProcesses", 1, 1, MAX_PROCESSES), bind)]
    hosts = [_entry_host(read, "orchestrators", entry) for entry in listed]
    _unique_hosts(read, "orchestrators", hosts)
    if single is not None and single != hosts[0]:
        raise read.fail("orchestratorHost", "must be unset, or the first host of orchestrators")
    entries = []
    for index, (host, entry) in enumerate(zip(hosts, listed, strict=True)):
        entry_bind = entry.get("bindAddress", bind)
        if not isinstance(entry_bind, str) or not _is_host(entry_bind):
            raise read.fail("orchestrators", f"{host}: invalid bindAddress {entry_bind!r}")
        key, setting = _entry_key(read, "orchestrators", entry), "orchestrators"
        if key is None and index == 0 and host_key is not None:
            key, setting = host_key, "orchestratorHostKey"
        count = _entry_count(read, "orchestrators", entry, "apiProcesses", 1)
        entries.append(_HostEntry(host, _target(ssh, host, key, setting), count, entry_bind))
    return entries


def _entry_host(read: _Reader, key: str, entry: dict[str, Any]) -> str:
    value = entry.get("host")
    if not isinstance(value, str) or not _is_host(value):
        raise read.fail(key, f"each entry needs a host (hostname or IP), got {value!r}")
    return value


def _entry_key(read: _Reader, key: str, entry: dict[str, Any]) -> str | None:
    value = entry.get("hostKey")
    if value is None:
        return None
    if not isinstance(value, str) or not _HOST_KEY.match(value):
        raise read.fail(key, f"{entry.get('host')}: invalid hostKey")
    return value


def _entry_count(read: _Reader, key: str, entry: dict[str, Any], field: str, low: int) -> int:
    value = entry.get(field, 1)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_PROCESSES:
        raise read.fail(
            key, f"{entry.get('host')}: {field} must be between {low} and {MAX_PROCESSES}"
        )
    return value


def _unique_hosts(read: _Reader, key: str, hosts: list[str]) -> None:
    if len(set(hosts)) != len(hosts):
        raise read.fail(key, "each host may be listed once")


class _Targets:
    """One SSH target per address: the first one named, unless a later one pins its key."""

    def __init__(self) -> None:
        self.by_host: dict[str, SshTarget] = {}

    def add(self, host: str, target: SshTarget) -> None:
        known = self.by_host.get(host)
        if known is None or (known.host_key is None and target.host_key is not None):
            self.by_host[host] = target


def _worker_counts(read: _Reader, ssh: _SshDefaults, targets: _Targets) -> dict[str, int] | None:
    """`workerHosts` as host -> processes; None when the key is not set."""
    if read.optional("workerHosts") is None:
        return None
    entries = read.records("workerHosts")
    hosts = [_entry_host(read, "workerHosts", entry) for entry in entries]
    _unique_hosts(read, "workerHosts", hosts)
    counts = {}
    for host, entry in zip(hosts, entries, strict=True):
        counts[host] = _entry_count(read, "workerHosts", entry, "processes", 0)
        targets.add(host, _target(ssh, host, _entry_key(read, "workerHosts", entry), "workerHosts"))
    return counts


def load_topology(
    read: _Reader,
    ssh: _SshDefaults,
    primary: _HostEntry,
    redis: RedisSettings,
    app: Settings,
    service: ServiceSettings,
) -> Topology:
    """Orchestrator, worker, Redis, replica and sentinel hosts, one SshTarget per address."""
    api_hosts = _orchestrator_entries(read, ssh, service.bind_address)
    if service.port + max(entry.api_processes for entry in api_hosts) - 1 > 65535:
        raise read.fail("servicePort", "leaves no room for every API process's port")
    targets = _Targets()
    for entry in (*api_hosts, primary):
        targets.add(entry.host, entry.target)
    workers = _worker_counts(read, ssh, targets)
    if workers is None:
        # Without workerHosts, each orchestrator runs one worker.
        workers = {entry.host: 1 for entry in api_hosts}
    replicas = _replica_entries(read, ssh, targets) if _mode(read) == "sentinel" else []

    app_hosts = [
        AppHost(
            name="orchestrator" if index == 0 else f"orchestrator-{entry.host}",
            target=targets.by_host[entry.host],
            public_host=entry.host,
            bind_address=entry.bind_address,
            api_ports=tuple(range(service.port, service.port + entry.api_processes)),
            worker_processes=workers.get(entry.host, 0),
        )
        for index, entry in enumerate(api_hosts)
    ]
    api_names = {entry.host for entry in api_hosts}
    app_hosts += [
        AppHost(f"worker-{host}", targets.by_host[host], host, "", (), count)
        for host, count in workers.items()
        if host not in api_names
    ]
    primary_node = RedisNode("redis", targets.by_host[primary.host], primary.host, redis.port, None)
    master = app.redis_sentinel_master
    if _mode(read) == "single":
        return Topology(tuple(app_hosts), primary_node, "single", (), (), master, 0)
    nodes = tuple(
        RedisNode(
            f"redis-replica-{host}",
            targets.by_host[host],
            host,
            redis.port,
            (primary.host, redis.port),
        )
        for host in replicas
    )
    sentinels = _sentinels(read, app, targets)
    quorum = read.integer("redisSentinelQuorum", len(sentinels) // 2 + 1, 1, len(sentinels))
    return Topology(tuple(app_hosts), primary_node, "sentinel", nodes, sentinels, master, quorum)


def _mode(read: _Reader) -> str:
    return read.text("redisMode", "single")


def _replica_entries(read: _Reader, ssh: _SshDefaults, targets: _Targets) -> list[str]:
    entries = read.records("redisReplicas")
    if not entries:
        raise read.fail("redisReplicas", "sentinel mode needs at least one replica host")
    hosts = [_entry_host(read, "redisReplicas", entry) for entry in entries]
    _unique_hosts(read, "redisReplicas", [read.host("redisHost"), *hosts])
    for host, entry in zip(hosts, entries, strict=True):
        key = _entry_key(read, "redisReplicas", entry)
        targets.add(host, _target(ssh, host, key, "redisReplicas"))
    return hosts


def _sentinels(read: _Reader, app: Settings, targets: _Targets) -> tuple[SentinelHost, ...]:
    addresses = app.sentinel_addresses
    if len(addresses) < 3:
        raise read.fail("redisSentinels", "sentinel mode needs three sentinels (host:port)")
    _unique_hosts(read, "redisSentinels", [host for host, _ in addresses])
    sentinels = []
    for host, port in addresses:
        if host not in targets.by_host:
            raise read.fail(
                "redisSentinels",
                f"{host} is not a host of this stack: list it in orchestrators, workerHosts,"
                " redisHost or redisReplicas, where its hostKey is pinned",
            )
        sentinels.append(SentinelHost(f"sentinel-{host}", targets.by_host[host], host, port))
    return tuple(sentinels)
