"""The real LightRAG Server (lightrag-hku[api], from its own .venv-lightrag/) on a free port.

`scripts/install-lightrag` installs it apart from the project's venv, with tiktoken's
o200k_base file in a local cache, because LightRAG would otherwise download it at start-up.
Its LLM and embedding bindings point at an OpenAI-compatible server given as `ModelEndpoints`
(in the tests, the stand-in of `tests.support.openai_standin`).

The port and the working directory are chosen once per `LightRAGServer`, so `stop()` then
`start()` brings the same server back at the same address with the documents it had: a test
can take LightRAG away in the middle of a job and give it back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.ports import free_port
from harness.waiting import wait_until
from tests.support.openai_standin import OpenAIStandin

REPO_ROOT = Path(__file__).resolve().parents[2]
LIGHTRAG_VENV = REPO_ROOT / ".venv-lightrag"
SERVER_COMMAND = LIGHTRAG_VENV / "bin" / "lightrag-server"
TIKTOKEN_CACHE_DIR = LIGHTRAG_VENV / "tiktoken-cache"
INSTALLED_STAMP = LIGHTRAG_VENV / ".installed"
LOG_TAIL_LINES = 60


class LightRAGNotInstalledError(RuntimeError):
    """The LightRAG virtualenv is missing: `scripts/install-lightrag` makes it."""


class LightRAGStartError(RuntimeError):
    """The server exited or did not answer /health in time; the message ends with its log."""


@dataclass(frozen=True)
class ModelEndpoints:
    """Where LightRAG's OpenAI bindings send LLM and embedding calls, and with which key."""

    base_url: str
    api_key: str
    embedding_dim: int
    llm_model: str = "standin-llm"
    embedding_model: str = "standin-embedding"

    @classmethod
    def of(cls, standin: OpenAIStandin) -> ModelEndpoints:
        return cls(standin.base_url, standin.api_key, standin.embedding_dim)


def require_installed() -> None:
    if not (SERVER_COMMAND.exists() and INSTALLED_STAMP.exists()):
        raise LightRAGNotInstalledError(
            f"LightRAG Server is not installed in {LIGHTRAG_VENV}: run scripts/install-lightrag"
        )


def env_file_text(settings: Mapping[str, str]) -> str:
    """The .env LightRAG Server reads from its working directory, one KEY=value a line."""
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def server_environment() -> dict[str, str]:
    """A bare environment, so the .env alone configures the server: LightRAG lets any
    variable already set win over its .env, and a proxy variable would send the calls to the
    loopback stand-in to a proxy instead."""
    return {
        "PATH": f"{LIGHTRAG_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }


class LightRAGServer:
    """Starts and stops one LightRAG Server; `base_url` and `api_key` are for its clients."""

    def __init__(
        self,
        workdir: Path,
        models: ModelEndpoints,
        api_key: str = "lightrag-test-key",
        extra_settings: Mapping[str, str] | None = None,
        startup_timeout_s: float = 90.0,
    ) -> None:
        self.workdir = workdir
        self.models = models
        self.api_key = api_key
        self.extra_settings = dict(extra_settings or {})
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.last_startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, str]:
        """Everything the .env holds; `extra_settings` (e.g. MAX_ASYNC) override the defaults."""
        return {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LIGHTRAG_API_KEY": self.api_key,
            "WORKING_DIR": str(self.workdir / "rag_storage"),
            "INPUT_DIR": str(self.workdir / "inputs"),
            "LOG_DIR": str(self.workdir),
            "TIKTOKEN_CACHE_DIR": str(TIKTOKEN_CACHE_DIR),
            "LLM_BINDING": "openai",
            "LLM_BINDING_HOST": self.models.base_url,
            "LLM_BINDING_API_KEY": self.models.api_key,
            "LLM_MODEL": self.models.llm_model,
            "EMBEDDING_BINDING": "openai",
            "EMBEDDING_BINDING_HOST": self.models.base_url,
            "EMBEDDING_BINDING_API_KEY": self.models.api_key,
            "EMBEDDING_MODEL": self.models.embedding_model,
            "EMBEDDING_DIM": str(self.models.embedding_dim),
            **self.extra_settings,
        }

    def start(self) -> None:
        """Start the server and wait for /health; raises LightRAGStartError with its log."""
        require_installed()
        if self.process is not None and self.process.poll() is None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / ".env").write_text(env_file_text(self.settings()))
        started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            # A process group of its own: stop() must reach any worker it forks, and a ^C
            # meant for pytest must not reach it first.
            self.process = subprocess.Popen(
                [str(SERVER_COMMAND)],
                cwd=self.workdir,
                env=server_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_healthy(self.process)
        except LightRAGStartError:
            self.stop()
            raise
        self.last_startup_s = time.monotonic() - started_at

    def _wait_until_healthy(self, process: subprocess.Popen[bytes]) -> None:
        def healthy() -> bool:
            if process.poll() is not None:
                raise LightRAGStartError(
                    f"lightrag-server exited with {process.returncode}\n{self.log_tail()}"
                )
            return httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200

        try:
            wait_until(
                healthy,
                self.startup_timeout_s,
                interval_s=0.2,
                describe="lightrag-server to answer /health",
                ignoring=(httpx.HTTPError,),  # not listening yet
            )
        except TimeoutError as timeout:
            raise LightRAGStartError(
                f"lightrag-server did not answer /health within {self.startup_timeout_s} s\n"
                f"{self.log_tail()}"
            ) from timeout

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the server's process group; SIGKILL it if it has not exited in time."""
        self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL the server's process group: a crash, with no shutdown of its own."""
        self._signal_and_wait(signal.SIGKILL, 5.0)

    def _signal_and_wait(self, signum: signal.Signals, timeout_s: float) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass  # it died on its own, and every child with it; wait() still reaps it
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LightRAGServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def lightrag_with_standin(
    workdir: Path, extra_settings: Mapping[str, str] | None = None
) -> Iterator[tuple[LightRAGServer, OpenAIStandin]]:
    """A stand-in and a LightRAG Server pointed at it, both stopped when the block ends."""
    with OpenAIStandin() as standin:
        models = ModelEndpoints.of(standin)
        with LightRAGServer(workdir, models, extra_settings=extra_settings) as server:
            yield server, standin
