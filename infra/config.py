"""The stack's settings: read once from Pulumi config, validated, with errors that name the key."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol, get_args

import pulumi
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from service.core.consumer_groups import GroupSpec, group_plan
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
PACKAGE_SOURCES = ("wheelhouse", "index")
REDIS_MODES = ("single", "sentinel")
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

    @property
    def use_sudo(self) -> bool:
        return self.user != "root"


@dataclass(frozen=True)
class Bastion:
    host: str
    port: int
    user: str
    host_key: str | None


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is, for redis-cli on its host, and what the service keeps there."""

    host: str
    port: int
    db: int
    # The service's own settings (service.config.Settings), built and validated here.
    app: Settings

    @property
    def url(self) -> str:
        return self.app.redis_url

    @property
    def address(self) -> str:
        """The Redis address the service uses, never with a password."""
        return self.app.redis_url

    @property
    def streams(self) -> tuple[str, str]:
        return (self.app.stream_ingestion, self.app.stream_events)

    @property
    def companion_keys(self) -> tuple[str, str]:
        """The dead-letter stream and the workers' counters, which belong to the task stream."""
        return (self.app.dead_letter_stream, self.app.worker_counters_key)

    @property
    def groups(self) -> tuple[GroupSpec, ...]:
        """Every (stream, group, start id), as the service itself would create them."""
        return group_plan(self.app)


@dataclass(frozen=True)
class ServiceSettings:
    bind_address: str
    port: int
    public_host: str
    install_dir: str
    config_dir: str
    user: str
    unit_name: str
    health_timeout_s: int

    @property
    def base_url(self) -> str:
        return f"http://{self.public_host}:{self.port}"

    @property
    def health_url(self) -> str:
        host = "127.0.0.1" if self.bind_address in ("0.0.0.0", "::") else self.bind_address
        return f"http://{host}:{self.port}/health/detailed"


@dataclass(frozen=True)
class AppHost:
    """One host that runs API processes (one systemd instance per port) and workers."""

    name: str
    target: SshTarget
    public_host: str
    bind_address: str
    api_ports: tuple[int, ...]
    worker_processes: int

    @property
    def base_urls(self) -> tuple[str, ...]:
        return tuple(f"http://{self.public_host}:{port}" for port in self.api_ports)

    @property
    def health_urls(self) -> tuple[str, ...]:
        host = "127.0.0.1" if self.bind_address in ("0.0.0.0", "::") else self.bind_address
        return tuple(f"http://{host}:{port}/health/detailed" for port in self.api_ports)


@dataclass(frozen=True)
class RedisNode:
    """A Redis data node in sentinel mode: the configured primary or a replica."""

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
    mode: str
    replicas: tuple[RedisNode, ...]
    sentinels: tuple[SentinelHost, ...]
    sentinel_master: str
    sentinel_quorum: int


@dataclass(frozen=True)
class PackageSettings:
    source: str
    index_url: str | None
    python_version: str
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class StackConfig:
    orchestrator: SshTarget
    redis_host: SshTarget
    bastion: Bastion | None
    redis: RedisSettings
    service: ServiceSettings
    packages: PackageSettings
    install_os_packages: bool
    drop_streams_on_destroy: bool
    topology: Topology


@dataclass(frozen=True)
class StackSecrets:
    """Secret settings; they stay Outputs so Pulumi keeps them encrypted."""

    ssh_private_key: pulumi.Output[str]
    bastion_private_key: pulumi.Output[str] | None
    redis_password: pulumi.Output[str] | None
    api_token: pulumi.Output[str] | None


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
        if field in SECRET_FIELDS or field == "redis_url":
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


def load(source: ConfigSource) -> tuple[StackConfig, StackSecrets]:
    """Read and validate every setting of the stack."""
    read = _Reader(source)
    ssh_user = read.text("sshUser", "root", _UNIX_NAME)
    ssh_port = read.integer("sshPort", 22, 1, 65535)
    host_keys = read.host_keys()
    listed = read.records("orchestrators")
    first_listed = listed[0].get("host") if listed else None
    orchestrator_host = read.host(
        "orchestratorHost", first_listed if isinstance(first_listed, str) else None
    )
    redis_host = read.host("redisHost")
    orchestrator = SshTarget(
        host=read.host("orchestratorSshHost", orchestrator_host),
        port=read.integer("orchestratorSshPort", ssh_port, 1, 65535),
        user=ssh_user,
        host_key=read.optional("orchestratorHostKey", _HOST_KEY)
        or host_keys.get(orchestrator_host),
    )
    redis_ssh = SshTarget(
        host=read.host("redisSshHost", redis_host),
        port=read.integer("redisSshPort", ssh_port, 1, 65535),
        user=ssh_user,
        host_key=read.optional("redisHostKey", _HOST_KEY) or host_keys.get(redis_host),
    )
    bastion_host = read.optional("bastionHost")
    bastion = None
    if bastion_host is not None:
        bastion = Bastion(
            host=read.host("bastionHost"),
            port=read.integer("bastionPort", 22, 1, 65535),
            user=read.text("bastionUser", ssh_user, _UNIX_NAME),
            host_key=read.optional("bastionHostKey", _HOST_KEY),
        )
    redis_port = read.integer("redisPort", 6379, 1, 65535)
    redis_db = read.integer("redisDb", 0, 0, 15)
    mode = read.text("redisMode", "single")
    if mode not in REDIS_MODES:
        raise read.fail("redisMode", f"must be one of {', '.join(REDIS_MODES)}")
    # With replicas, a task is accepted only once one of them has it (the service's WAIT).
    implied: dict[str, object] = {"task_replicas": 1} if mode == "sentinel" else {}
    redis = RedisSettings(
        host=redis_host,
        port=redis_port,
        db=redis_db,
        app=app_settings(read, _redis_url(read, redis_host, redis_port, redis_db), implied),
    )
    if redis.app.stream_ingestion == redis.app.stream_events:
        raise read.fail("streamEvents", "must differ from streamIngestion")
    service = ServiceSettings(
        bind_address=read.host("serviceBindAddress", "0.0.0.0"),
        port=read.integer("servicePort", 8000, 1, 65535),
        public_host=orchestrator_host,
        install_dir=read.text("installDir", "/opt/shield-orchestrator", _ABSOLUTE_PATH),
        config_dir=read.text("configDir", "/etc/shield-orchestrator", _ABSOLUTE_PATH),
        user=read.text("serviceUser", "shield", _UNIX_NAME),
        unit_name=read.text("serviceName", "shield-orchestrator", _UNIT_NAME),
        health_timeout_s=read.integer("healthTimeoutSeconds", 90, 5, 3600),
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
    config = StackConfig(
        orchestrator=orchestrator,
        redis_host=redis_ssh,
        bastion=bastion,
        redis=redis,
        service=service,
        packages=packages,
        install_os_packages=read.boolean("installOsPackages", True),
        drop_streams_on_destroy=read.boolean("dropStreamsOnDestroy", False),
        topology=load_topology(read, orchestrator, redis_ssh, redis, service, ssh_user, ssh_port),
    )
    secrets = StackSecrets(
        ssh_private_key=read.required_secret("sshPrivateKey"),
        bastion_private_key=read.secret("bastionPrivateKey"),
        redis_password=read.secret("redisPassword"),
        api_token=read.secret("apiToken"),
    )
    return config, secrets


def _entry_host(read: _Reader, key: str, entry: dict[str, Any]) -> str:
    value = entry.get("host")
    if not isinstance(value, str) or not _is_host(value):
        raise read.fail(key, f"each entry needs a host (hostname or IP), got {value!r}")
    return value


def _entry_key(read: _Reader, key: str, entry: dict[str, Any]) -> str | None:
    value = entry.get("hostKey")
    if value is None:
        return read.host_keys().get(str(entry.get("host")))
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


def load_topology(
    read: _Reader,
    orchestrator: SshTarget,
    redis_ssh: SshTarget,
    redis: RedisSettings,
    service: ServiceSettings,
    ssh_user: str,
    ssh_port: int,
) -> Topology:
    """Orchestrator, worker, replica and sentinel hosts, from the list keys or the legacy ones."""

    def target(host: str, host_key: str | None) -> SshTarget:
        return SshTarget(host=host, port=ssh_port, user=ssh_user, host_key=host_key)

    listed = read.records("orchestrators")
    # (host, target, api processes, bind address); the legacy keys give one such host.
    if listed:
        hosts = [_entry_host(read, "orchestrators", entry) for entry in listed]
        _unique_hosts(read, "orchestrators", hosts)
        api_hosts = []
        for host, entry in zip(hosts, listed, strict=True):
            bind = entry.get("bindAddress", service.bind_address)
            if not isinstance(bind, str) or not _is_host(bind):
                raise read.fail("orchestrators", f"{host}: invalid bindAddress {bind!r}")
            api_hosts.append(
                (
                    host,
                    target(host, _entry_key(read, "orchestrators", entry)),
                    _entry_count(read, "orchestrators", entry, "apiProcesses", 1),
                    bind,
                )
            )
    else:
        processes = read.integer("apiProcesses", 1, 1, MAX_PROCESSES)
        api_hosts = [(service.public_host, orchestrator, processes, service.bind_address)]
    if service.port + max(count for _, _, count, _ in api_hosts) - 1 > 65535:
        raise read.fail("servicePort", "leaves no room for every API process's port")
    known = {host: host_target for host, host_target, _, _ in api_hosts}
    known.setdefault(redis_ssh.host, redis_ssh)

    worker_entries = read.records("workerHosts")
    workers: dict[str, int]
    if worker_entries:
        worker_hosts = [_entry_host(read, "workerHosts", entry) for entry in worker_entries]
        _unique_hosts(read, "workerHosts", worker_hosts)
        workers = {}
        for host, entry in zip(worker_hosts, worker_entries, strict=True):
            workers[host] = _entry_count(read, "workerHosts", entry, "processes", 0)
            if host not in known:
                known[host] = target(host, _entry_key(read, "workerHosts", entry))
    else:
        workers = {host: 1 for host, _, _, _ in api_hosts}

    app_hosts = []
    for index, (host, host_target, count, bind) in enumerate(api_hosts):
        app_hosts.append(
            AppHost(
                name="orchestrator" if index == 0 else f"orchestrator-{host}",
                target=host_target,
                public_host=host,
                bind_address=bind,
                api_ports=tuple(range(service.port, service.port + count)),
                worker_processes=workers.get(host, 0),
            )
        )
    api_host_names = {host for host, _, _, _ in api_hosts}
    for host, count in workers.items():
        if host not in api_host_names:
            app_hosts.append(AppHost(f"worker-{host}", known[host], host, "", (), count))

    master = redis.app.redis_sentinel_master
    mode = read.text("redisMode", "single")
    if mode == "single":
        return Topology(tuple(app_hosts), mode, (), (), master, 0)
    return _sentinel_topology(read, tuple(app_hosts), known, redis, target)


def _sentinel_topology(
    read: _Reader,
    app_hosts: tuple[AppHost, ...],
    known: dict[str, SshTarget],
    redis: RedisSettings,
    target: Any,
) -> Topology:
    replica_entries = read.records("redisReplicas")
    if not replica_entries:
        raise read.fail("redisReplicas", "sentinel mode needs at least one replica host")
    replica_hosts = [_entry_host(read, "redisReplicas", entry) for entry in replica_entries]
    _unique_hosts(read, "redisReplicas", [redis.host, *replica_hosts])
    replicas = []
    for host, entry in zip(replica_hosts, replica_entries, strict=True):
        replica_target = known.get(host) or target(host, _entry_key(read, "redisReplicas", entry))
        if entry.get("hostKey") and replica_target.host_key is None:
            replica_target = target(host, _entry_key(read, "redisReplicas", entry))
        known[host] = replica_target
        replicas.append(
            RedisNode(
                f"redis-replica-{host}", replica_target, host, redis.port, (redis.host, redis.port)
            )
        )
    addresses = redis.app.sentinel_addresses
    if len(addresses) < 3:
        raise read.fail("redisSentinels", "sentinel mode needs three sentinels (host:port)")
    _unique_hosts(read, "redisSentinels", [host for host, _ in addresses])
    sentinels = []
    for host, port in addresses:
        if host not in known:
            raise read.fail(
                "redisSentinels",
                f"{host} is not a host of this stack: list it in orchestrators, workerHosts,"
                " redisHost or redisReplicas, where its hostKey is pinned",
            )
        sentinels.append(SentinelHost(f"sentinel-{host}", known[host], host, port))
    quorum = read.integer("redisSentinelQuorum", len(sentinels) // 2 + 1, 1, len(sentinels))
    return Topology(
        app_hosts,
        "sentinel",
        tuple(replicas),
        tuple(sentinels),
        redis.app.redis_sentinel_master,
        quorum,
    )
