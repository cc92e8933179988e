"""HostSteps: the one way a component makes a step on a host (a command or a file copy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
from pulumi_command import remote

from infra import host_scripts


@dataclass(frozen=True)
class HostSteps:
    """Makes the steps of one component on one host, each a child of the component.

    Every script carries the host's identity (infra.facts), so a rebuilt host runs it again,
    and runs through `sudo -n` for a non-root user. No step passes environment variables
    over SSH (add_previous_output_in_env is off), so hosts need no AcceptEnv.
    """

    prefix: str
    parent: pulumi.Resource
    connection: remote.ConnectionArgs
    identity: str
    use_sudo: bool

    def run(self, script: str) -> str:
        """The command line that runs script on this host."""
        return host_scripts.invocation(host_scripts.on_host(self.identity, script), self.use_sudo)

    def command(
        self,
        suffix: str,
        create: str | pulumi.Output[str],
        *,
        delete: str | None = None,
        stdin: pulumi.Input[str] | None = None,
        triggers: Sequence[pulumi.Input[object]] | None = None,
        after: Sequence[pulumi.Resource] = (),
    ) -> remote.Command:
        """A step that runs create's script (and delete's on destroy), after the given ones."""
        return remote.Command(
            f"{self.prefix}-{suffix}",
            connection=self.connection,
            create=self._script(create),
            delete=None if delete is None else self.run(delete),
            stdin=stdin,
            triggers=None if triggers is None else list(triggers),
            add_previous_output_in_env=False,
            opts=self._after(after),
        )

    def _script(self, create: str | pulumi.Output[str]) -> str | pulumi.Output[str]:
        return create.apply(self.run) if isinstance(create, pulumi.Output) else self.run(create)

    def copy(
        self, suffix: str, local: Path, remote_path: str, after: Sequence[pulumi.Resource] = ()
    ) -> remote.CopyToRemote:
        """A step that copies a local file to remote_path (again only when either changes)."""
        return remote.CopyToRemote(
            f"{self.prefix}-{suffix}",
            connection=self.connection,
            source=pulumi.FileAsset(str(local)),
            remote_path=remote_path,
            opts=self._after(after),
        )

    def _after(self, resources: Sequence[pulumi.Resource]) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self.parent, depends_on=list(resources))


def secret_stdin(value: pulumi.Output[str] | None) -> pulumi.Output[str] | None:
    """A secret as one line of standard input, still secret; None stays None."""
    if value is None:
        return None
    line: pulumi.Output[str] = value.apply(lambda text: text + "\n")
    return pulumi.Output.secret(line)
