"""The TLS front as the lab tests reach it: one throwaway CA per test run, its certificate for
the lab's orchestrators, and clients that trust that CA (never an ignored certificate error)."""

from __future__ import annotations

import functools
import ssl
import tempfile
from pathlib import Path
from typing import Protocol

import httpx

from tests.support.tls_ca import TlsFiles, make_tls

ORCHESTRATORS = ("127.0.10.8", "127.0.10.9")


class SecretSetter(Protocol):
    def set_secret(self, key: str, value: str) -> None: ...


@functools.cache
def lab_tls() -> TlsFiles:
    """This test run's CA and the certificate of every lab orchestrator."""
    return make_tls(ORCHESTRATORS, ("hx-orchestrator-server", "hx-orchestrator-2"))


@functools.cache
def ca_file() -> Path:
    """The CA certificate as a file (httpx verify=, curl --cacert, Chromium's NSS database)."""
    return lab_tls().write_ca(Path(tempfile.mkdtemp(prefix="shield-lab-ca-")))


def ssl_context() -> ssl.SSLContext:
    """A client context that trusts the CA, for websockets and raw sockets."""
    return lab_tls().client_context()


def set_front_secrets(engine: SecretSetter) -> None:
    """The stack's tlsCertificate and tlsPrivateKey, on stdin as every secret."""
    engine.set_secret("tlsCertificate", lab_tls().certificate)
    engine.set_secret("tlsPrivateKey", lab_tls().private_key)


def front_url(host: str) -> str:
    return f"https://{host}"


def client(base_url: str, token: str, timeout_s: float = 10) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        verify=ssl_context(),
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout_s,
    )
