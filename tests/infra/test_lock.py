"""service/requirements.lock agrees with service/requirements.txt: every direct pin at the
same version, nothing else named as direct, and every package pinned with its hashes.
When this fails, run `make lock`."""

from __future__ import annotations

import re
from pathlib import Path

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
