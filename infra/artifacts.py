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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE_PACKAGE = "service"
# The dashboard (service/static) ships its page, style and script beside the code, and the
# task queue its Lua scripts (service/tasks/lua); the requirements go with their lock.
SHIPPED_SUFFIXES = (".py", ".txt", ".lock", ".html", ".css", ".js", ".lua")
DIGEST_CHARS = 16
# Where a handler directory (handlerPath) lands in the release; the worker imports from it.
HANDLER_DIR = "handler"


@dataclass(frozen=True)
class Release:
    """The service code (and a handler directory, under handler/), packed."""

    digest: str
    tarball: Path
    # The release's directory the worker imports handlers from (handlerPath), if any.
    handler_dir: str | None = None


@dataclass(frozen=True)
class Wheelhouse:
    """Every wheel the locked requirements need on the target, packed; the digest is of the
    lock's text (pins and hashes), so one name always holds the same files."""

    digest: str
    tarball: Path


@dataclass(frozen=True)
class Artifacts:
    """What each host of the service gets: the code, its locked requirements (every line
    with its hashes), and their wheels."""

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


def digest_text(*parts: str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() + b"\0")
    return hasher.hexdigest()[:DIGEST_CHARS]


def deterministic_tar(root: Path, files: Sequence[Path], compress: bool) -> bytes:
    """A tar of the files (relative to root) with fixed owners, modes and times, sorted."""
    return tar_entries([(path.as_posix(), root / path) for path in sorted(files)], compress)


def tar_entries(entries: Sequence[tuple[str, Path]], compress: bool) -> bytes:
    """A tar of (name in the archive, file) entries in their order, with fixed owners,
    modes and times."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, source in entries:
            data = source.read_bytes()
            info = tarfile.TarInfo(name)
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


def handler_files(directory: Path) -> list[Path]:
    """The files of a handler directory, relative to it, without caches or hidden files."""
    return sorted(
        path.relative_to(directory)
        for path in directory.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def build_release(
    build_dir: Path, root: Path = REPO_ROOT, handler_dir: Path | None = None
) -> Release:
    """Pack the service package (and handler_dir's files under handler/) into
    build_dir/service-<digest>.tar.gz."""
    entries = [(path.as_posix(), root / path) for path in service_files(root)]
    if handler_dir is not None:
        entries += [
            (f"{HANDLER_DIR}/{path.as_posix()}", handler_dir / path)
            for path in handler_files(handler_dir)
        ]
    hasher = hashlib.sha256()
    for name, source in entries:
        hasher.update(name.encode() + b"\0" + source.read_bytes() + b"\0")
    digest = hasher.hexdigest()[:DIGEST_CHARS]
    tarball = build_dir / f"service-{digest}.tar.gz"
    data = tar_entries(entries, compress=True)
    return Release(digest, _write_if_changed(tarball, data), HANDLER_DIR if handler_dir else None)


def pip_download_command(
    requirements: Path, dest: Path, python_version: str, platforms: Sequence[str]
) -> list[str]:
    """pip download of the hashed requirements' binary wheels for the target's Python and
    platform."""
    command = [
        sys.executable, "-m", "pip", "download",
        "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:",
        # Every file must match a hash of the lock: what the index serves cannot change
        # what a wheelhouse of this name holds.
        "--require-hashes",
        "--python-version", python_version,
        "--implementation", "cp",
        "--dest", str(dest),
        "-r", str(requirements),
    ]  # fmt: skip
    for platform in platforms:
        command += ["--platform", platform]
    return command


def build_wheelhouse(
    build_dir: Path,
    requirements: str,
    python_version: str,
    platforms: Sequence[str],
    extra_wheels: Sequence[Path] = (),
) -> Wheelhouse:
    """Download the wheels of the locked requirements (every line pinned with its hashes)
    once per (lock, extra wheels, Python, platforms), checking each file's hash, then pack
    them with the extra wheels (a handler's own wheel, hashed in the lock's text too)."""
    extras = [
        digest_text(path.name, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in extra_wheels
    ]
    digest = digest_text(requirements, python_version, *platforms, *extras)
    wheels = build_dir / f"wheels-{digest}"
    tarball = build_dir / f"wheelhouse-{digest}.tar"
    if not tarball.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        requirements_file = build_dir / f"requirements-{digest}.txt"
        requirements_file.write_text(requirements)
        for wheel in extra_wheels:
            (wheels / wheel.name).write_bytes(wheel.read_bytes())
        result = subprocess.run(
            pip_download_command(requirements_file, wheels, python_version, platforms),
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
