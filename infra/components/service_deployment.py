"""ServiceDeployment: the service user, code, venv, env file and systemd units on one host."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import remote

from infra import scripts
from infra.artifacts import Release, Wheelhouse, digest_text
from infra.config import (
    AppHost,
    PackageSettings,
    RedisSettings,
    ServiceSettings,
    SshTarget,
    env_name,
)


@dataclass(frozen=True)
class ServiceDeploymentArgs:
    target: SshTarget
    # Which processes this host runs: an API instance per port, and the workers.
    host: AppHost
    connection: remote.ConnectionArgs
    service: ServiceSettings
    redis: RedisSettings
    packages: PackageSettings
    requirements: str
    release: Release
    wheelhouse: Wheelhouse | None
    redis_password: pulumi.Output[str] | None
    api_token: pulumi.Output[str] | None
    install_os_packages: bool
    # The service starts only after these exist (the consumer groups).
    ready_after: list[pulumi.Resource]
    # The host's identity digest (infra.facts): a rebuilt host runs every step again.
    identity: str


class ServiceDeployment(pulumi.ComponentResource):
    """Deploys the code and the template units, starts one instance per process, then waits
    for each API process's /health/detailed."""

    health: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: ServiceDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("shield:infra:ServiceDeployment", name, None, opts)
        service, use_sudo = args.service, args.target.use_sudo

        def run(script: str) -> str:
            return scripts.invocation(scripts.on_host(args.identity, script), use_sudo)

        def command(suffix: str, **kwargs: Any) -> remote.Command:
            # No PULUMI_COMMAND_STDOUT: it needs AcceptEnv on the host, and no step reads it.
            return remote.Command(
                f"{name}-{suffix}",
                connection=args.connection,
                add_previous_output_in_env=False,
                **kwargs,
            )

        def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=list(resources))

        wheelhouse_python = args.packages.python_version if args.wheelhouse else None
        self.preflight = command(
            "preflight",
            create=run(
                scripts.orchestrator_preflight(
                    args.target.host, service, args.install_os_packages, wheelhouse_python
                )
            ),
            opts=after(),
        )

        def copy(suffix: str, tarball: Path, remote_path: str) -> remote.CopyToRemote:
            return remote.CopyToRemote(
                f"{name}-{suffix}",
                connection=args.connection,
                source=pulumi.FileAsset(str(tarball)),
                remote_path=remote_path,
                opts=after(self.preflight),
            )

        # The copies land in a folder named by the host's identity: CopyToRemote copies again
        # only when its path or file changes, so a rebuilt host gets a new path.
        incoming = f"{service.install_dir}/incoming/{args.identity}"
        release_tarball = f"{incoming}/service-{args.release.digest}.tar.gz"
        self.release_copy = copy("release-copy", args.release.tarball, release_tarball)
        self.release = command(
            "release",
            create=run(
                scripts.release_unpack(service.install_dir, args.release.digest, release_tarball)
            ),
            opts=after(self.release_copy),
        )
        venv_dependencies: list[pulumi.Resource] = [self.preflight]
        wheelhouse_path = None
        if args.wheelhouse is not None:
            wheelhouse_path = f"{incoming}/wheelhouse-{args.wheelhouse.digest}.tar"
            self.wheelhouse_copy = copy("wheelhouse-copy", args.wheelhouse.tarball, wheelhouse_path)
            venv_dependencies.append(self.wheelhouse_copy)
        requirements_digest = digest_text(args.requirements, wheelhouse_path or "index")
        self.venv = command(
            "venv",
            create=run(
                scripts.venv_install(
                    service.install_dir,
                    args.requirements,
                    requirements_digest,
                    wheelhouse_path,
                    args.packages.index_url,
                )
            ),
            opts=after(*venv_dependencies),
        )
        bind = args.host.bind_address or None
        revision = [
            f"release {args.release.digest}",
            f"venv {requirements_digest}",
            f"units {digest_text(scripts.api_unit(service, bind), scripts.worker_unit(service))}",
        ]
        self.units = command(
            "units",
            create=run(scripts.service_apply(service, revision, bind)),
            delete=run(scripts.service_remove(service)),
            stdin=_env_text(args),
            opts=after(self.release, self.venv, *args.ready_after),
        )
        # One step per process: scaling adds or removes only that process's step.
        units = [scripts.api_instance(service, port) for port in args.host.api_ports] + [
            scripts.worker_instance(service, number)
            for number in range(1, args.host.worker_processes + 1)
        ]
        self.instances: dict[str, remote.Command] = {}
        for unit in units:
            suffix = unit.removeprefix(service.unit_name).removesuffix(".service").lstrip("-@")
            kind = "api" if unit.startswith(service.unit_name + "@") else ""
            step = f"{kind}-{suffix}" if kind else suffix.replace("@", "-")
            self.instances[unit] = command(
                step,
                create=self.units.stdout.apply(functools.partial(_start_script, run, unit)),
                delete=run(scripts.instance_stop(unit)),
                opts=after(self.units),
            )
        if args.host.api_ports:
            self.health_check = command(
                "health",
                create=run(scripts.health_wait(args.target.host, service, args.host.health_urls)),
                triggers=[self.units.stdout],
                opts=after(*self.instances.values()),
            )
            self.health = self.health_check.stdout.apply(_parse_health)
        else:
            self.health = pulumi.Output.from_input({})
        self.register_outputs({"health": self.health})


def _env_text(args: ServiceDeploymentArgs) -> pulumi.Output[str]:
    """The env file, secret as a whole because it holds the password and the token."""
    public = scripts.service_environment(args.redis.app)

    def render(secrets: list[str | None]) -> str:
        password, token = secrets
        settings = dict(public)
        if password:
            settings[env_name("redis_password")] = password
        if token:
            settings[env_name("api_token")] = token
        return scripts.env_file(settings)

    return pulumi.Output.secret(
        pulumi.Output.all(args.redis_password, args.api_token).apply(render)
    )


def _parse_health(stdout: str | None) -> dict[str, Any]:
    if not stdout:
        return {}
    parsed: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return parsed


def _start_script(run: Callable[[str], str], unit: str, applied: str | None) -> str:
    return run(scripts.instance_start(unit, applied or ""))
