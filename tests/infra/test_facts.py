"""Reading a host's identity: the parser, the ssh command line, and failures that name the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import SshTarget, load
from infra.facts import (
    HostConflict,
    HostIdentity,
    HostUnreachable,
    SshCredentials,
    known_hosts_line,
    parse_identity,
    read_identity,
    ssh_command,
)
from infra.program import identity_script
from tests.infra.support import BASE_CONFIG, SSH_KEY, config_source

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"


def test_identity_lines_are_parsed_and_digested() -> None:
    identity = parse_identity("noise\nmachine-id abc\ntoken 0f0f\n")
    assert identity == HostIdentity("abc", "0f0f")
    assert identity.digest != HostIdentity("abc", "0f0e").digest
    with pytest.raises(ValueError, match="unexpected identity output"):
        parse_identity("machine-id abc\n")


def test_known_hosts_pins_the_port_when_it_is_not_22() -> None:
    assert known_hosts_line("10.0.0.8", 22, KEY) == f"10.0.0.8 {KEY}\n"
    assert known_hosts_line("10.0.0.8", 2222, KEY) == f"[10.0.0.8]:2222 {KEY}\n"


def test_ssh_checks_a_pinned_key_strictly(tmp_path: Path) -> None:
    target = SshTarget("10.0.0.8", 22, "deploy", KEY)
    argv = ssh_command(target, tmp_path, None, "true")
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert (tmp_path / "known_hosts").read_text() == f"10.0.0.8 {KEY}\n"
    assert argv[-2:] == ["deploy@10.0.0.8", "true"]


def test_credentials_never_show_the_key() -> None:
    assert "PRIVATE" not in repr(SshCredentials(SSH_KEY))


def test_an_unreachable_host_is_named_with_its_role() -> None:
    target = SshTarget("127.0.0.1", 1, "root", KEY)
    with pytest.raises(HostUnreachable) as failure:
        read_identity("redis", target, SshCredentials(SSH_KEY), "true")
    message = str(failure.value)
    assert message.startswith("shield-orchestrator: host 127.0.0.1 (redis): cannot read its")
    assert "Connection refused" in message


def test_conflict_lines_are_parsed_and_named_one_per_line() -> None:
    identity = parse_identity(
        "machine-id m\ntoken none\n"
        "conflict serviceName /etc/systemd/system/x@.service exists; set serviceName\n"
        "conflict servicePort port 8000 on h is held by python3 (pid 7); set servicePort\n"
    )
    assert identity.digest == parse_identity("machine-id m\ntoken none\n").digest
    assert str(HostConflict.of("127.0.10.8", identity.conflicts)).splitlines() == [
        "shield-orchestrator: host 127.0.10.8: /etc/systemd/system/x@.service exists;"
        " set serviceName",
        "shield-orchestrator: host 127.0.10.8: port 8000 on h is held by python3 (pid 7);"
        " set servicePort",
    ]


def test_a_preview_reads_identities_without_writing() -> None:
    config, _ = load(config_source(BASE_CONFIG, {"sshPrivateKey": SSH_KEY}))
    for host in ("127.0.10.8", "127.0.10.48"):
        preview = identity_script(config, host, create=False)
        up = identity_script(config, host, create=True)
        assert "install -d" not in preview and " SET " not in preview
        assert "install -d" in up or " SET " in up
    assert "conflict serviceName" in identity_script(config, "127.0.10.8", create=False)
    assert "conflict serviceName" not in identity_script(config, "127.0.10.48", create=False)
