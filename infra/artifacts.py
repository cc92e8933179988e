"""What the program ships: a release tarball of the service and a wheelhouse of its pins.

Both are built on the machine that runs pulumi, deterministically, so the same sources give
the same bytes and Pulumi sees no change. Digests name them, and the scripts on the hosts
use the digests to tell one release from the next.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE_PACKAGE = "service"
# The dashboard (service/static) ships its page, style and script beside the code.
SHIPPED_SUFFIXES = (".py", ".txt", ".html", ".css", ".js")
DIGEST_CHARS = 16


@dataclass(frozen=True)
class Release:
    """The service code, packed."""

    digest: str
    tarball: Path


@dataclass(frozen=True)
class Wheelhouse:
    """Every wheel the pinned requirements need on the target, packed."""

    digest: str
    tarball: Path


@dataclass(frozen=True)
class Artifacts:
    """What each host of the service gets: the code, its requirements, and their wheels."""

    release: Release
    requirements: str
    # None when the hosts install from an index (packageSource: index).
    wheelhouse: Wheelhouse | None


def service_files(root: Path = REPO_ROOT) -> list[Path]:
    """The files of the service package, relative to root, without caches."""
    package = root / SERVICE_PACKAGE
    return sorted(
        path.relative_to(root)
        for path in package.rglob("*")
        if path.is_file() and path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts
    )


def digest_files(root: Path, files: Iterable[Path]) -> str:
    """A digest of names and contents, stable across machines."""
    hasher = hashlib.sha256()
    for relative in files:
        hasher.update(relative.as_posix().encode() + b"\0")
        hasher.update((root / relative).read_bytes() + b"\0")
    return hasher.hexdigest()[:DIGEST_CHARS]


def digest_text(*parts: str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() + b"\0")
    return hasher.hexdigest()[:DIGEST_CHARS]


def deterministic_tar(root: Path, files: Sequence[Path], compress: bool) -> bytes:
    """A tar of the files with fixed owners, modes and times, in sorted order."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for relative in sorted(files):
            data = (root / relative).read_bytes()
            info = tarfile.TarInfo(relative.as_posix())
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            archive.addfile(info, io.BytesIO(data))
    if not compress:
        return raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as stream:
        stream.write(raw.getvalue())
    return packed.getvalue()


def _write_if_changed(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return path


def build_release(build_dir: Path, root: Path = REPO_ROOT) -> Release:
    """Pack the service package into build_dir/service-<digest>.tar.gz."""
    files = service_files(root)
    digest = digest_files(root, files)
    tarball = build_dir / f"service-{digest}.tar.gz"
    return Release(
        digest, _write_if_changed(tarball, deterministic_tar(root, files, compress=True))
    )


def pip_download_command(
    requirements: Path, dest: Path, python_version: str, platforms: Sequence[str]
) -> list[str]:
    """pip download of binary wheels for the target's Python and platform."""
    command = [
        sys.executable, "-m", "pip", "download",
        "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version", python_version,
        "--implementation", "cp",
        "--dest", str(dest),
        "-r", str(requirements),
    ]  # fmt: skip
    for platform in platforms:
        command += ["--platform", platform]
    return command


def build_wheelhouse(
    build_dir: Path, requirements: Path, python_version: str, platforms: Sequence[str]
) -> Wheelhouse:
    """Download the wheels once per (requirements, Python, platforms), then pack them."""
    digest = digest_text(requirements.read_text(), python_version, *platforms)
    wheels = build_dir / f"wheels-{digest}"
    tarball = build_dir / f"wheelhouse-{digest}.tar"
    if not tarball.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            pip_download_command(requirements, wheels, python_version, platforms),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"pip download for Python {python_version} on {', '.join(platforms)} failed:\n"
                + result.stderr.strip()
            )
        files = sorted(path.relative_to(wheels) for path in wheels.glob("*.whl"))
        _write_if_changed(tarball, deterministic_tar(wheels, files, compress=False))
    return Wheelhouse(digest, tarball)
