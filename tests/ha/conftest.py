"""The lab-ha stack on the lab's four hosts, deployed once for the tests of this folder.

The two HA hosts (hx-orchestrator-2 on 127.0.10.9, hx-redis-replica on 127.0.10.49) boot
here and power off at the end, so the rest of `make test` runs on the two-host lab. The
primary's redis-server gets a runtime drop-in with Restart=no, so a SIGKILL keeps it down
until the test starts it again, as a host that is gone would be.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from harness.engine import Engine
from harness.hosts import LAB_SCRIPT, ORCHESTRATOR, REDIS_HOST, Lab
from tests.support.lab_front import front_url, set_front_secrets, ssl_context

ORCHESTRATOR_2 = "127.0.10.9"
REPLICA = "127.0.10.49"
SENTINELS = ((REDIS_HOST, 26379), (REPLICA, 26379), (ORCHESTRATOR, 26379))
API_TOKEN = "ha-api-token-61d0c3a9"
# Each API process on its own, on the host's loopback address of its own (lab-ha.yaml's
# bindAddress; this machine shares the lab's network), for the tests that pick a process.
API_URLS = tuple(
    f"http://{address}:{port}" for address in ("127.0.1.8", "127.0.1.9") for port in (8000, 8001)
)
# What clients use: each host's TLS front, over both of its processes.
FRONT_URLS = (front_url(ORCHESTRATOR), front_url(ORCHESTRATOR_2))
NO_RESTART_DROP_IN = "/run/systemd/system/redis-server.service.d/no-restart.conf"


@dataclass
class HaStack:
    engine: Engine
    lab: Lab

    def redis(self, host: str) -> redis.Redis:
        return redis.Redis(
            host=host, password=self.lab.redis_password, decode_responses=True, socket_timeout=5
        )

    def primary(self) -> str:
        """The primary's address as the first sentinel that answers knows it."""
        for host, port in SENTINELS:
            try:
                sentinel = redis.Redis(
                    host=host, port=port, password=self.lab.redis_password, socket_timeout=2
                )
                address = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "shield")
            except redis.RedisError:
                continue
            return str(address[0].decode() if isinstance(address[0], bytes) else address[0])
        raise AssertionError("no sentinel answers")

    def other_sentinels(self, host: str, port: int) -> int:
        """How many other sentinels this one knows of."""
        sentinel = redis.Redis(
            host=host, port=port, password=self.lab.redis_password, decode_responses=True
        )
        return int(sentinel.sentinel_master("shield")["num-other-sentinels"])

    def api(self, base_url: str, timeout_s: float = 10) -> httpx.Client:
        return httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=timeout_s,
            verify=ssl_context(),
        )


def make_primary(stack: HaStack) -> None:
    """REPLICAOF NO ONE on 127.0.10.48, kept in its config (CONFIG REWRITE)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client = stack.redis(REDIS_HOST)
            client.execute_command("REPLICAOF", "NO", "ONE")
            client.execute_command("CONFIG", "REWRITE")
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run_async(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on a loop of its own, leaving the thread's current loop as it was
    (asyncio.run unsets it, and the Pulumi mocks of the tests after these need one)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coroutine)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def _lab(*args: str) -> None:
    result = subprocess.run([str(LAB_SCRIPT), *args], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"scripts/lab {' '.join(args)} failed: {result.stderr[-2000:]}")


@pytest.fixture(scope="package")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaStack]:
    _lab("up-ha")
    lab = Lab.current()
    engine = Engine.create(tmp_path_factory.mktemp("ha-project"), stack="lab-ha")
    stack = HaStack(engine, lab)
    keys = {host: lab.host_key(host) for host in (ORCHESTRATOR, ORCHESTRATOR_2, REPLICA)}
    engine.set_config("hostKeys", json.dumps(keys))
    engine.set_config("redisHostKey", lab.redis_host_key)
    # Tasks whose ack a failover lost are reclaimed after this long, not the default minute.
    engine.set_config("claimIdleMs", "5000")
    engine.set_secret("sshPrivateKey", lab.ssh_key.read_text())
    engine.set_secret("redisPassword", lab.redis_password)
    engine.set_secret("apiToken", API_TOKEN)
    set_front_secrets(engine)
    # The two-host lab's Redis is a primary, whatever a run before this one left behind.
    make_primary(stack)
    lab.check(
        REDIS_HOST,
        f"mkdir -p $(dirname {NO_RESTART_DROP_IN})"
        f" && printf '[Service]\\nRestart=no\\n' > {NO_RESTART_DROP_IN} && systemctl daemon-reload",
    )
    try:
        yield stack
    finally:
        engine.run("destroy", "--yes", "--stack", "lab-ha", check=False)
        # Give the two-host lab back as it was: 127.0.10.48 a primary that is up.
        try:
            lab.ssh(
                REDIS_HOST,
                f"rm -f {NO_RESTART_DROP_IN}"
                " && systemctl daemon-reload && systemctl start redis-server",
            )
            make_primary(stack)
        finally:
            _lab("down-ha")
