"""A real redis-server from Debian on a free loopback port (and Sentinel), owned by its caller."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import redis

from harness.ports import free_port
from harness.waiting import wait_until


def wait_for_ping(port: int, timeout_s: float = 10.0) -> None:
    """Wait until a redis-server (or sentinel) on the port answers PING."""
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        wait_until(
            client.ping,
            timeout_s,
            describe=f"redis-server on port {port} to answer PING",
            ignoring=(redis.ConnectionError, redis.exceptions.BusyLoadingError),
        )
    finally:
        client.close()


class RedisServer:
    """Start, stop and restart one redis-server; its data survives restarts when AOF is on."""

    def __init__(
        self, workdir: Path, appendonly: bool = True, extra_args: Sequence[str] = ()
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make deps` (apt redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("this redis-server is not running")
        return self.process.pid

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.workdir),
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait_until_ready()

    def wait_until_ready(self, timeout_s: float = 10.0) -> None:
        wait_for_ping(self.port, timeout_s)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


class SentinelServer:
    """One redis-server in sentinel mode watching a primary as master `name`, quorum 2."""

    def __init__(self, workdir: Path, primary_port: int, name: str = "shield") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.primary_port = primary_port
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Sentinel rewrites its config file as it learns, so each gets a file of its own.
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.name} 1000\n"
            f"sentinel failover-timeout {self.name} 10000\n"
        )
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_ping(self.port)

    def master_port(self) -> int:
        client = redis.Redis(port=self.port, decode_responses=True)
        try:
            # redis-py parses the reply into (host, port) but types it loosely.
            address = cast(tuple[str, int], client.sentinel_get_master_addr_by_name(self.name))
            return int(address[1])
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
