"""service/requirements.lock agrees with service/requirements.txt: every direct pin at the
same version, nothing else named as direct, and every package pinned with its hashes.
When this fails, run `make lock`."""

from __future__ import annotations

import re
from pathlib import Path

from infra import host_scripts
from infra.artifacts import build_wheelhouse, digest_text, pip_download_command

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO_ROOT / "service" / "requirements.txt"
LOCK = REPO_ROOT / "service" / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def direct_pins() -> dict[str, str]:
    """service/requirements.txt's pins, by normalized name."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"service/requirements.txt: {line!r} is not name==version"
        pins[_name(match.group(1))] = match.group(3)
    return pins


def locked_entries() -> list[tuple[str, str, str]]:
    """Each entry of the lock: (normalized name, version, the entry's whole text)."""
    entries = []
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        match = PIN.match(block)
        if match:
            entries.append((_name(match.group(1)), match.group(3), block))
    return entries


def test_every_direct_pin_is_locked_at_its_version() -> None:
    locked = {name: version for name, version, _ in locked_entries()}
    mismatched = {
        name: (version, locked.get(name))
        for name, version in direct_pins().items()
        if locked.get(name) != version
    }
    assert mismatched == {}, "service/requirements.lock is stale: run `make lock`"


def test_the_lock_names_as_direct_only_what_requirements_txt_lists() -> None:
    direct = {name for name, _, text in locked_entries() if "-r service/requirements.txt" in text}
    assert direct == set(direct_pins()), "service/requirements.lock is stale: run `make lock`"


def test_every_locked_package_has_hashes() -> None:
    entries = locked_entries()
    assert len(entries) > len(direct_pins())  # the transitive packages are there too
    assert [name for name, _, text in entries if not HASH.search(text)] == []


def test_the_wheelhouse_is_downloaded_and_installed_with_require_hashes(tmp_path: Path) -> None:
    command = pip_download_command(LOCK, tmp_path, "3.11.2", ["manylinux2014_x86_64"])
    assert "--require-hashes" in command and ["-r", str(LOCK)] == command[-4:-2]
    script = host_scripts.venv_install("/opt/x", LOCK.read_text(), "d1", "/opt/x/w.tar", None)
    assert " install --quiet --disable-pip-version-check --require-hashes " in script


def test_the_wheelhouse_is_named_by_the_locks_text_hashes_included(tmp_path: Path) -> None:
    locked = LOCK.read_text()
    first = re.search(r"sha256:([0-9a-f]{64})", locked)
    assert first is not None
    other = locked.replace(first.group(1), "0" * 64, 1)
    names = set()
    for text in (locked, other):
        # Already built: no download, only the name.
        digest = digest_text(text, "3.11.2", "manylinux2014_x86_64")
        (tmp_path / f"wheelhouse-{digest}.tar").write_bytes(b"")
        names.add(build_wheelhouse(tmp_path, text, "3.11.2", ["manylinux2014_x86_64"]).digest)
    assert len(names) == 2
