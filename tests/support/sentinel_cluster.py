"""A primary, one replica and three sentinels on loopback, for the Sentinel fault tests."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import redis

from harness.redis_server import RedisServer, SentinelServer
from harness.waiting import wait_until

RESTART_AFTER_S = 3.0
# A failed election is retried after twice the failover timeout (10 s) and more.
FAILOVER_START_S = 60


class Cluster:
    """A primary, one replica and three sentinels, all on loopback."""

    def __init__(self, root: Path) -> None:
        self.primary = RedisServer(root / "primary")
        self.replica = RedisServer(
            root / "replica",
            extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)],
        )
        self.sentinels = [
            SentinelServer(root / f"sentinel{index}", self.primary.port) for index in range(3)
        ]

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        primary = redis.Redis(port=self.primary.port, decode_responses=True)
        wait_until(lambda: primary.info("replication")["connected_slaves"] == 1, timeout_s=20)
        watcher = redis.Redis(port=self.sentinels[0].port, decode_responses=True)
        # Sentinels learn of each other over the primary's hello channel; a failover needs it.
        wait_until(
            lambda: int(watcher.sentinel_master("shield")["num-other-sentinels"]) == 2,
            timeout_s=30,
        )

    def kill_primary(self) -> threading.Thread:
        """SIGKILL the primary; like systemd, start it again a few seconds later.

        Sentinel makes it a replica of the promoted one, so WAIT 1 can succeed again: with no
        replica at all, every POST /tasks is refused, as it must be. The restart waits, past
        RESTART_AFTER_S, until a sentinel has begun the failover: back any earlier, the
        primary would be seen up again and no failover would happen, which is not what these
        tests are about. It may still come back before the failover ends.
        """
        process = self.primary.process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        restarter = threading.Thread(target=self._restart_primary_once_failing_over)
        restarter.start()
        return restarter

    def _restart_primary_once_failing_over(self) -> None:
        time.sleep(RESTART_AFTER_S)
        try:
            wait_until(
                self._failing_over,
                timeout_s=FAILOVER_START_S,
                ignoring=(redis.ConnectionError,),
                describe="a sentinel to begin the failover",
            )
        finally:
            # Back even when no failover began, so the test fails on what it checks.
            self.primary.start()

    def _sentinel_views(self) -> list[dict[str, Any]]:
        """Each sentinel's SENTINEL MASTER reply: the primary it names, and its flags."""
        views = []
        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, decode_responses=True) as client:
                views.append(client.sentinel_master(sentinel.name))
        return views

    def _failing_over(self) -> bool:
        return any(
            "failover_in_progress" in view["flags"] or int(view["port"]) != self.primary.port
            for view in self._sentinel_views()
        )

    def settled_primary(self, timeout_s: float = 60) -> int:
        """Wait until the failover is over; the port of the primary everyone agrees on.

        Over means every sentinel names the same primary and the other server replicates it
        with its link up. Before that, a primary restarted ahead of the failover can take
        writes as a primary for a moment, and the failover then discards them: what a client
        read there is not the data that stays.
        """

        def agreed() -> int | None:
            views = self._sentinel_views()
            # "master" alone: not down in any sentinel's eyes, no failover in progress.
            if any(view["flags"] != "master" for view in views):
                return None
            ports = {int(view["port"]) for view in views}
            if len(ports) != 1:
                return None
            (port,) = ports
            other = self.replica if port == self.primary.port else self.primary
            with redis.Redis(port=other.port, decode_responses=True) as client:
                replication = client.info("replication")
            linked = (
                replication["role"] == "slave"
                and int(replication["master_port"]) == port
                and replication["master_link_status"] == "up"
            )
            return port if linked else None

        # A server restarting or loading its data refuses for a moment: not settled yet.
        return wait_until(agreed, timeout_s=timeout_s, ignoring=(redis.ConnectionError,))

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            if server.process is not None and server.process.poll() is None:
                server.stop()

    @property
    def sentinel_setting(self) -> str:
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
