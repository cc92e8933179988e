"""Installing the pinned peers into a cache outside the repo: `python -m bench.peers.install`.

Each peer is built or installed once from its registry (the Go module proxy, npm, PyPI) into
`~/.cache/shield-orchestrator/peers/<name>-<version>/` (SHIELD_PEER_CACHE moves it), so
nothing built lands in the work tree and a second `make bench` reuses it. A peer that cannot
be installed is reported with its reason and left out of its section with that reason in
the report; it never stops the rest of the benchmark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
INSTALL_TIMEOUT_S = 1200

CENTRIFUGO_VERSION = "6.9.1"
CENTRIFUGO_MODULE = "github.com/centrifugal/centrifugo/v6"


class PeerUnavailable(RuntimeError):
    """A peer cannot run here; the message is the one line the report shows."""


@dataclass(frozen=True)
class PythonPeer:
    """A Python peer in a virtualenv of its own: arq pins redis<6, our service needs 8."""

    name: str
    version: str
    requirements: tuple[str, ...]

    @property
    def home(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def python(self) -> Path:
        return self.home / "venv" / "bin" / "python"


ARQ = PythonPeer("arq", "0.28.0", ("arq==0.28.0",))
TASKIQ = PythonPeer("taskiq-redis", "1.2.4", ("taskiq-redis==1.2.4", "taskiq==0.13.0"))
PYTHON_PEERS = (ARQ, TASKIQ)


def cache_root() -> Path:
    default = Path.home() / ".cache" / "shield-orchestrator" / "peers"
    return Path(os.environ.get("SHIELD_PEER_CACHE", default))


def centrifugo_binary() -> Path:
    return cache_root() / f"centrifugo-v{CENTRIFUGO_VERSION}" / "bin" / "centrifugo"


def bullmq_pins() -> dict[str, str]:
    """BullMQ and its Redis client as pinned in the committed package.json."""
    package = json.loads((PEERS_DIR / "bullmq" / "package.json").read_text())
    return dict(package["dependencies"])


def bullmq_home() -> Path:
    return cache_root() / f"bullmq-{bullmq_pins()['bullmq']}"


def _run(
    command: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> None:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, cwd=cwd, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PeerUnavailable(f"{what}: {error}") from error
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PeerUnavailable(f"{what} failed: {last[0][:200]}")


def install_centrifugo() -> Path:
    """`go install` the pinned release from the module proxy (about 4 minutes on 2 cores)."""
    binary = centrifugo_binary()
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise PeerUnavailable("Centrifugo is built from source and Go is not installed")
    env = dict(os.environ, GOBIN=str(binary.parent), GOFLAGS="-mod=mod")
    # Without -X the binary calls itself v0.0.0; the version is in its logs and /info.
    ldflags = f"-X {CENTRIFUGO_MODULE}/internal/build.Version={CENTRIFUGO_VERSION}"
    _run(
        [go, "install", "-ldflags", ldflags, f"{CENTRIFUGO_MODULE}@v{CENTRIFUGO_VERSION}"],
        "go install centrifugo",
        env=env,
    )
    return binary


def copy_bullmq_files() -> Path:
    """The committed package files and script, into the install (the script runs there)."""
    home = bullmq_home()
    home.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "bullmq_peer.mjs"):
        shutil.copyfile(PEERS_DIR / "bullmq" / name, home / name)
    return home


def install_bullmq() -> Path:
    """`npm ci` the committed package-lock.json into the cache; the script runs from there."""
    home = copy_bullmq_files()
    lock = (home / "package-lock.json").read_text()
    if _installed_from(home) == lock:
        return home
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise PeerUnavailable("BullMQ runs on Node.js, which is not installed")
    # No install scripts: msgpackr's optional native build falls back to plain JavaScript.
    _run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], "npm ci bullmq", cwd=home)
    _record_installed(home, lock)
    return home


def install_python_peer(peer: PythonPeer) -> Path:
    """A virtualenv with the peer's pinned requirements; returns its python."""
    pins = "\n".join(peer.requirements)
    if peer.python.exists() and _installed_from(peer.home) == pins:
        return peer.python
    _run(
        [sys.executable, "-m", "venv", "--clear", str(peer.home / "venv")], f"venv for {peer.name}"
    )
    _run(
        [str(peer.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *peer.requirements],
        f"pip install {peer.name}",
    )  # fmt: skip
    _record_installed(peer.home, pins)
    return peer.python


# What an install was made from, so a changed pin or lock file installs again.
INSTALLED_FROM = "installed-from.txt"


def _installed_from(home: Path) -> str | None:
    stamp = home / INSTALLED_FROM
    return stamp.read_text() if stamp.exists() else None


def _record_installed(home: Path, source: str) -> None:
    (home / INSTALLED_FROM).write_text(source)


def install_all() -> dict[str, str]:
    """Install every peer; what each came to: its path, or why it cannot run."""
    steps: dict[str, Callable[[], Path]] = {
        f"centrifugo {CENTRIFUGO_VERSION}": install_centrifugo,
        f"bullmq {bullmq_pins()['bullmq']}": install_bullmq,
        **{
            f"{peer.name} {peer.version}": partial(install_python_peer, peer)
            for peer in PYTHON_PEERS
        },
    }
    outcome: dict[str, str] = {}
    for name, step in steps.items():
        try:
            outcome[name] = str(step())
        except PeerUnavailable as error:
            outcome[name] = f"cannot run: {error}"
    return outcome


def main() -> int:
    for name, result in install_all().items():
        print(f"peer {name}: {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
