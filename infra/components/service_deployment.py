"""ServiceDeployment: the service user, code, venv, env file and systemd units on one host."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_command import remote

from infra import host_scripts
from infra.artifacts import Artifacts, digest_text
from infra.components.steps import HostSteps
from infra.config import AppHost, PackageSettings, ServiceSettings, env_name
from service.core.settings import Settings


@dataclass(frozen=True)
class ServiceDeploymentArgs:
    # Which processes this host runs (an API instance per port, and the workers), and how
    # to reach it.
    host: AppHost
    connection: remote.ConnectionArgs
    service: ServiceSettings
    # The service's own settings, which become the env file.
    settings: Settings
    # The secret settings by Settings field name (redis_password, api_token, ...).
    secrets: Mapping[str, pulumi.Output[str]]
    packages: PackageSettings
    artifacts: Artifacts
    install_os_packages: bool
    # The service starts only after these exist (the consumer groups).
    ready_after: list[pulumi.Resource]
    # The host's identity digest (infra.facts): a rebuilt host runs every step again.
    identity: str


class ServiceDeployment(pulumi.ComponentResource):
    """Checks the host, ships the code and its venv, writes the env file and the template
    units, starts one instance per process (and the metrics-collector beside the workers),
    then waits for each API process's health."""

    health: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: ServiceDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("shield:infra:ServiceDeployment", name, None, opts)
        self._args = args
        self.serves_api = bool(args.host.api_ports)
        self._steps = HostSteps(
            name, self, args.connection, args.identity, args.host.target.use_sudo
        )
        self.preflight = self._check_host()
        self.release = self._ship_release()
        self.venv = self._build_venv()
        self.units = self._write_units()
        self.instances = self._start_processes()
        self.health = self._wait_for_health()
        self.register_outputs({"health": self.health})

    def _check_host(self) -> remote.Command:
        """Systemd and Python are there; the service user and directories exist."""
        args = self._args
        python = args.packages.python_version if args.artifacts.wheelhouse else None
        return self._steps.command(
            "preflight",
            host_scripts.orchestrator_preflight(
                args.host.target.host, args.service, args.install_os_packages, python
            ),
        )

    def _incoming(self, file_name: str) -> str:
        # Copies land in a folder named by the host's identity: CopyToRemote copies again
        # only when its path or file changes, so a rebuilt host gets a new path.
        return f"{self._args.service.install_dir}/incoming/{self._args.identity}/{file_name}"

    def _ship_release(self) -> remote.Command:
        """Copy the release tarball, unpack it into releases/<digest>, point current at it."""
        release = self._args.artifacts.release
        tarball = self._incoming(f"service-{release.digest}.tar.gz")
        self.release_copy = self._steps.copy(
            "release-copy", release.tarball, tarball, after=[self.preflight]
        )
        return self._steps.command(
            "release",
            host_scripts.release_unpack(self._args.service.install_dir, release.digest, tarball),
            after=[self.release_copy],
        )

    def _build_venv(self) -> remote.Command:
        """Copy the wheelhouse (if any) and build the venv of the pinned requirements."""
        args = self._args
        after: list[pulumi.Resource] = [self.preflight]
        wheelhouse_path = None
        if args.artifacts.wheelhouse is not None:
            wheelhouse = args.artifacts.wheelhouse
            wheelhouse_path = self._incoming(f"wheelhouse-{wheelhouse.digest}.tar")
            self.wheelhouse_copy = self._steps.copy(
                "wheelhouse-copy", wheelhouse.tarball, wheelhouse_path, after=after
            )
            after.append(self.wheelhouse_copy)
        requirements = args.artifacts.requirements
        self.requirements_digest = digest_text(requirements, wheelhouse_path or "index")
        return self._steps.command(
            "venv",
            host_scripts.venv_install(
                args.service.install_dir,
                requirements,
                self.requirements_digest,
                wheelhouse_path,
                args.packages.index_url,
            ),
            after=after,
        )

    def _write_units(self) -> remote.Command:
        """The env file (from stdin) and the template units; the revision lines mark what
        is deployed, so a new release, venv or unit text runs this step again."""
        args, service = self._args, self._args.service
        bind = args.host.bind_address or None
        handler_dir = args.artifacts.release.handler_dir
        # The metrics-collector runs beside the workers: on each host that runs any.
        collector = args.host.worker_processes > 0
        units = [
            host_scripts.api_unit(service, bind),
            host_scripts.worker_unit(service, handler_dir),
        ]
        if collector:
            units.append(host_scripts.collector_unit(service))
        revision = [
            f"release {args.artifacts.release.digest}",
            f"venv {self.requirements_digest}",
            f"units {digest_text(*units)}",
        ]
        return self._steps.command(
            "units",
            host_scripts.service_apply(
                args.host.target.host, service, revision, bind, handler_dir, collector
            ),
            delete=host_scripts.service_remove(service),
            stdin=_env_text(args.settings, args.secrets),
            after=[self.release, self.venv, *args.ready_after],
        )

    def _start_processes(self) -> dict[str, remote.Command]:
        """One step per process, so scaling adds or removes only that process's step; each
        carries the units step's output, so whatever restarts the units restarts it."""
        service, host = self._args.service, self._args.host
        steps: dict[str, remote.Command] = {}
        for port in host.api_ports:
            steps[host_scripts.api_instance(service, port)] = self._instance(
                f"api-{port}", host_scripts.api_instance(service, port)
            )
        for number in range(1, host.worker_processes + 1):
            steps[host_scripts.worker_instance(service, number)] = self._instance(
                f"worker-{number}", host_scripts.worker_instance(service, number)
            )
        if host.worker_processes > 0:
            collector = host_scripts.collector_unit_name(service)
            steps[collector] = self._instance("collector", collector)
        return steps

    def _instance(self, suffix: str, unit: str) -> remote.Command:
        def start(applied: str | None) -> str:
            return host_scripts.instance_start(unit, applied or "")

        return self._steps.command(
            suffix,
            self.units.stdout.apply(start),
            delete=host_scripts.instance_stop(unit),
            after=[self.units],
        )

    def _wait_for_health(self) -> pulumi.Output[dict[str, Any]]:
        """Wait until every API process says up; its answer is the streamHealth output."""
        host = self._args.host
        if not host.api_ports:
            return pulumi.Output.from_input({})
        self.health_check = self._steps.command(
            "health",
            host_scripts.health_wait(host.target.host, self._args.service, host.health_urls),
            triggers=[self.units.stdout],
            after=list(self.instances.values()),
        )
        return self.health_check.stdout.apply(_parse_health)


def _env_text(settings: Settings, secrets: Mapping[str, pulumi.Output[str]]) -> pulumi.Output[str]:
    """The env file, secret as a whole because it holds the password and the tokens."""
    public = host_scripts.service_environment(settings)
    fields = sorted(secrets)

    def render(values: list[str | None]) -> str:
        environment = dict(public)
        for field, value in zip(fields, values, strict=True):
            if value:
                environment[env_name(field)] = value
        return host_scripts.env_file(environment)

    return pulumi.Output.secret(pulumi.Output.all(*(secrets[f] for f in fields)).apply(render))


def _parse_health(stdout: str | None) -> dict[str, Any]:
    if not stdout:
        return {}
    parsed: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return parsed
