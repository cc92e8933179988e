"""Running the Pulumi program under the official mocks and recording what it registers."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime.mocks import MockMonitor

from infra import config as stack_config
from infra.stack import Deployed, Identities, deploy, outputs, warn_about_unpinned_hosts
from tests.support.tls_ca import make_tls

SECRET_SIG = "4dabf18193072939515e22adb298388d"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAtest\n-----END OPENSSH PRIVATE KEY-----\n"
REDIS_PASSWORD = "redis-pass-7f3c1"
API_TOKEN = "api-token-9d2e4"
HEALTH = {"status": "up", "latency_ms": 0.2, "streams": {}}
GROUPS = {"shield:ingestion_queue": ["lightrag-workers", "metrics-collector"]}

# The TLS front's certificate and key, as a stack with edgeProxy nginx sets them.
TLS = make_tls(("127.0.10.8", "127.0.10.9"))
TLS_SECRETS = {"tlsCertificate": TLS.certificate, "tlsPrivateKey": TLS.private_key}

IDENTITIES = Identities(
    by_host={"127.0.10.8": "orchestrator0identity", "127.0.10.48": "redis0identity"}
)

BASE_CONFIG = {
    "taskHandler": "log-and-ack",
    "orchestratorHost": "127.0.10.8",
    "redisHost": "127.0.10.48",
    "packageSource": "index",
    # As in the lab: loopback, so no apiToken is required; host keys are left to the tests.
    "serviceBindAddress": "127.0.10.8",
    # No front: the tests of the front (test_edge) set edgeProxy nginx and a certificate.
    "edgeProxy": "none",
    "allowUnpinnedHostKeys": "true",
}


def config_source(
    values: Mapping[str, str], secrets: Mapping[str, str]
) -> stack_config.ConfigSource:
    class Source:
        def get(self, key: str) -> str | None:
            return values.get(key)

        def get_secret(self, key: str) -> pulumi.Output[str] | None:
            return pulumi.Output.secret(secrets[key]) if key in secrets else None

    return Source()


@dataclass
class Registered:
    type: str
    name: str
    parent: str
    dependencies: list[str]
    inputs: dict[str, Any]
    raw: dict[str, Any]


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    registered: dict[str, Registered] = field(default_factory=dict)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.name.endswith("-health"):
            state["stdout"] = json.dumps(HEALTH)
        elif args.name.endswith("-groups"):
            state["stdout"] = "created\n" + json.dumps(GROUPS)
        elif args.typ == "command:remote:Command":
            state["stdout"] = "ok"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


class RecordingMonitor(MockMonitor):
    """Keeps each registration's parent, dependencies and raw (still encrypted) inputs."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object)
            self.recording.registered[request.name] = Registered(
                type=request.type,
                name=request.name,
                parent=request.parent,
                dependencies=list(request.dependencies),
                inputs=unwrap_secrets(raw),
                raw=raw,
            )
        return response


@dataclass
class ProgramRun:
    registered: dict[str, Registered]
    outputs: dict[str, Any]
    urns: dict[str, str]

    def depends_on(self, name: str, other: str) -> bool:
        return self.urns[other] in self.registered[name].dependencies


def run_program(
    values: Mapping[str, str],
    build_dir: Path,
    source_root: Path | None = None,
    secrets: Mapping[str, str] | None = None,
    identities: Identities = IDENTITIES,
) -> ProgramRun:
    """Run the program under mocks and return everything it registered and exported."""
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks, project="shield-orchestrator", stack="test", preview=False, monitor=monitor
    )
    secret_values = {"sshPrivateKey": SSH_KEY} if secrets is None else dict(secrets)
    exported: dict[str, Any] = {}
    urns: dict[str, str] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        settings, stack_secrets = stack_config.load(config_source(values, secret_values))
        kwargs = {} if source_root is None else {"source_root": source_root}
        warn_about_unpinned_hosts(settings)
        deployed: Deployed = deploy(settings, stack_secrets, identities, build_dir, **kwargs)
        resources = _children(deployed)
        result = outputs(settings, deployed)
        return pulumi.Output.all(
            pulumi.Output.all(*[resource.urn for resource in resources]),
            result["streamHealth"],
            result["consumerGroups"],
        ).apply(lambda values_: _collect(values_, resources, result, exported, urns))

    program()
    return ProgramRun(mocks.registered, exported, urns)


def _children(deployed: Deployed) -> list[pulumi.Resource]:
    found: list[pulumi.Resource] = [deployed.streams, *deployed.services, *deployed.edges]
    for component in (deployed.streams, *deployed.services, *deployed.edges):
        found += [
            value for value in vars(component).values() if isinstance(value, pulumi.CustomResource)
        ]
    return found


def _collect(
    values: list[Any],
    resources: list[pulumi.Resource],
    result: dict[str, Any],
    exported: dict[str, Any],
    urns: dict[str, str],
) -> None:
    resource_urns, health, groups = values
    for urn in resource_urns:
        urns[urn.rsplit("::", 1)[-1]] = urn
    exported.update(result)
    exported["streamHealth"] = health
    exported["consumerGroups"] = groups


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270"


def unwrap_secrets(value: Any) -> Any:
    """Serialized inputs with each secret envelope replaced by its value."""
    if _is_secret(value):
        return unwrap_secrets(value.get("value"))
    if isinstance(value, dict):
        return {key: unwrap_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(item) for item in value]
    return value


def plain_strings(value: Any) -> Iterator[str]:
    """Every string in serialized inputs that is not inside a secret envelope."""
    if _is_secret(value):
        return
    if isinstance(value, dict):
        for item in value.values():
            yield from plain_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from plain_strings(item)
    elif isinstance(value, str):
        yield value
