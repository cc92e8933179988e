"""EdgeProxy: the TLS + HTTP/2 front (Debian's nginx) before every API process of one host."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

from infra import edge_scripts
from infra.artifacts import digest_text
from infra.components.steps import HostSteps
from infra.config import AppHost, EdgeSettings, ServiceSettings


@dataclass(frozen=True)
class EdgeProxyArgs:
    host: AppHost
    connection: remote.ConnectionArgs
    service: ServiceSettings
    edge: EdgeSettings
    # The certificate chain and the key, PEM; secret, they travel on stdin only.
    certificate: pulumi.Output[str]
    private_key: pulumi.Output[str]
    install_os_packages: bool
    # The front's directory lives in the service's config directory, made by its preflight.
    ready_after: list[pulumi.Resource]
    identity: str
    # The API processes' steps: a new upstream list is written once a new process started,
    # and a process that goes is deleted after the list without it is in place.
    upstreams_after: list[pulumi.Resource] = field(default_factory=list)


class EdgeProxy(pulumi.ComponentResource):
    """Installs nginx if allowed, then writes the front's certificate, key, nginx.conf and unit
    and (re)loads it; destroy removes what it wrote."""

    def __init__(
        self, name: str, args: EdgeProxyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("shield:infra:EdgeProxy", name, None, opts)
        steps = HostSteps(name, self, args.connection, args.identity, args.host.target.use_sudo)
        label = args.host.target.host
        self.install = steps.command(
            "install",
            edge_scripts.edge_install(label, args.service, args.install_os_packages),
            after=args.ready_after,
        )
        config = edge_scripts.nginx_config(args.host, args.service, args.edge)
        unit = edge_scripts.edge_unit(args.service, args.edge)
        self.apply = steps.command(
            "config",
            edge_scripts.edge_apply(
                label, args.service, config, unit, [f"front {digest_text(config, unit)}"]
            ),
            delete=edge_scripts.edge_remove(args.service),
            stdin=pulumi.Output.secret(
                pulumi.Output.all(args.certificate, args.private_key).apply(
                    lambda pem: pem[0].rstrip("\n") + "\n" + pem[1].rstrip("\n") + "\n"
                )
            ),
            after=[self.install, *args.upstreams_after],
        )
        self.register_outputs({"applied": self.apply.stdout})
