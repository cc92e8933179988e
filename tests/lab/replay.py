"""Carrying out the program's resources on the lab hosts, as pulumi-command would.

The command provider cannot be had on this machine (see scripts/pulumi-toolchain), so these
tests take the program's resources from a run under Pulumi's mocks and carry them out
themselves: each Command's create line over one SSH session with its stdin, each
CopyToRemote as an scp of its asset, in dependency order. An update re-runs the resources
whose inputs changed; destroy runs the delete lines in reverse order. What runs on the hosts
is exactly what pulumi-command would run; what this does not test is the provider itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

from tests.infra.support import ProgramRun
from tests.lab.hosts import Lab


@dataclass
class Applied:
    stdout: dict[str, str] = field(default_factory=dict)


def _resources(run: ProgramRun) -> dict[str, Any]:
    return {name: item for name, item in run.registered.items() if item.type.startswith("command:")}


def order(run: ProgramRun) -> list[str]:
    """Resource names in an order that respects every recorded dependency."""
    resources = _resources(run)
    by_urn = {run.urns[name]: name for name in resources if name in run.urns}
    graph = {
        name: {by_urn[urn] for urn in item.dependencies if urn in by_urn}
        for name, item in resources.items()
    }
    return list(TopologicalSorter(graph).static_order())


def changed(before: ProgramRun, after: ProgramRun) -> list[str]:
    """Names, in apply order, of the resources a `pulumi up` would run again.

    Those whose inputs differ, plus those whose triggers take outputs of one that runs
    again: under mocks those outputs do not change, on the hosts they do.
    """
    old, new = _resources(before), _resources(after)
    urn_names = {after.urns[name]: name for name in new if name in after.urns}
    rerun: list[str] = []
    for name in order(after):
        item = new[name]
        upstream = {urn_names.get(urn) for urn in item.dependencies}
        if (
            name not in old
            or old[name].inputs != item.inputs
            or ("triggers" in item.inputs and upstream & set(rerun))
        ):
            rerun.append(name)
    return rerun


def apply(lab: Lab, run: ProgramRun, names: list[str] | None = None) -> Applied:
    """Carry out the given resources (all by default) in dependency order."""
    applied = Applied()
    selected = set(order(run) if names is None else names)
    for name in order(run):
        if name not in selected:
            continue
        item = run.registered[name]
        inputs = item.inputs
        host = inputs["connection"]["host"]
        if item.type == "command:remote:CopyToRemote":
            lab.copy(host, Path(inputs["source"]["path"]), inputs["remotePath"])
            continue
        result = lab.ssh(host, inputs["create"], inputs.get("stdin") or "")
        assert result.returncode == 0, f"{name} failed on {host}:\n{result.stderr[-3000:]}"
        applied.stdout[name] = result.stdout
    return applied


def destroy(lab: Lab, run: ProgramRun) -> None:
    """Run every delete line, last resource first."""
    for name in reversed(order(run)):
        inputs = run.registered[name].inputs
        if "delete" not in inputs:
            continue
        result = lab.ssh(inputs["connection"]["host"], inputs["delete"], inputs.get("stdin") or "")
        assert result.returncode == 0, f"delete of {name} failed:\n{result.stderr}"
