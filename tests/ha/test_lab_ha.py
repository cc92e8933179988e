"""The lab-ha stack on the real hosts: two orchestrators with two API processes each, a
primary, a replica and three sentinels; a failover under load, SSE clients that resume
across it and across hosts, the old primary's return, and scaling the API processes.

The tests run in file order and share one stack.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import pytest
import redis

from harness.hosts import ORCHESTRATOR, REDIS_HOST
from service.core import names
from tests.ha.conftest import (
    API_TOKEN,
    API_URLS,
    FRONT_URLS,
    ORCHESTRATOR_2,
    REPLICA,
    SENTINELS,
    HaStack,
    run_async,
)
from tests.support.clients import SseReader
from tests.support.lab_front import ssl_context
from tests.support.lab_waiting import wait_until

pytestmark = pytest.mark.e2e

TASKS = 5_000
POSTERS = 8
# claimIdleMs (5 s in this stack, see conftest), plus the reclaim interval and a wide margin.
DRAIN_AFTER_FAILOVER_S = 5 + 5 + 20
DEADLINE_S = 180
JOB = "ha-failover"


def stream_key(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def worker_group_stats(ha: HaStack) -> tuple[int, int | None]:
    """The worker group's pending and lag in /events/stats."""
    with ha.api(API_URLS[-1]) as client:
        stats = client.get("/events/stats").json()
    [group] = [
        group
        for group in stats["streams"][names.INGESTION_STREAM]["groups"]
        if group["name"] == names.WORKER_GROUP
    ]
    return group["pending"], group["lag"]


def worker_group_report(ha: HaStack, primary: redis.Redis) -> str:
    """Where the worker group stands on the primary, and what the workers logged."""
    groups = [
        group
        for group in primary.xinfo_groups(names.INGESTION_STREAM)
        if group["name"] == names.WORKER_GROUP
    ]
    pending = primary.xpending_range(
        names.INGESTION_STREAM, names.WORKER_GROUP, min="-", max="+", count=20
    )
    consumers = primary.xinfo_consumers(names.INGESTION_STREAM, names.WORKER_GROUP)
    logs = [
        ha.lab.ssh(
            host,
            "journalctl -u 'shield-orchestrator-worker@*' --no-pager -o cat"
            " | grep -E 'WARNING|ERROR' | tail -n 30",
        ).stdout
        for host in (ORCHESTRATOR, ORCHESTRATOR_2)
    ]
    return (
        f"\nstats (pending, lag): {worker_group_stats(ha)}\nXINFO GROUPS: {groups}"
        f"\npending (first 20): {pending}\nconsumers: {consumers}"
        "\nworker warnings:\n" + "\n".join(logs)
    )


def test_up_deploys_every_process_replica_and_sentinel(ha: HaStack) -> None:
    ha.engine.up()
    outputs = ha.engine.outputs()
    assert outputs["apiEndpoints"] == list(FRONT_URLS)
    for url in FRONT_URLS:
        with ha.api(url) as client:
            assert client.get("/health/detailed").json()["status"] == "up"
    assert outputs["streamHealth"]["status"] == "up"
    for url in API_URLS:
        with ha.api(url) as client:
            assert client.get("/health/detailed").json()["status"] == "up"
    for host in (ORCHESTRATOR, ORCHESTRATOR_2):
        active = ha.lab.check(
            host, "systemctl list-units --no-legend --state=active 'shield-orchestrator*' | wc -l"
        )
        # Two API instances, one worker, the metrics-collector beside it and the front.
        assert int(active) == 5, host
    replica = ha.redis(REPLICA).info("replication")
    assert (replica["role"], replica["master_host"], replica["master_link_status"]) == (
        "slave",
        REDIS_HOST,
        "up",
    )
    env = ha.lab.check(ORCHESTRATOR_2, "cat /etc/shield-orchestrator/shield.env")
    assert 'SHIELD_TASK_REPLICAS="1"' in env and "127.0.10.8:26379" in env
    assert ha.primary() == REDIS_HOST
    # The outputs read the nodes when the run started: a second run sees the replica synced.
    ha.engine.up("--expect-no-changes")
    nodes = ha.engine.outputs()["redisNodes"]
    assert nodes[REDIS_HOST]["role"] == "master" and nodes[REPLICA]["role"] == "slave"
    assert nodes[REPLICA]["link"] == "up" and nodes[REPLICA]["lag_bytes"] >= 0
    assert ha.engine.outputs()["currentPrimary"] == f"{REDIS_HOST}:6379"


@dataclass
class Follower:
    """An SSE client that resumes with Last-Event-ID, moving to the next URL when one fails."""

    urls: Sequence[str]
    params: dict[str, str]
    last_id: str
    received: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hosts_used: list[str] = field(default_factory=list)

    async def run(self, finished: Callable[[], bool]) -> None:
        index = 0
        while not finished():
            url = self.urls[index % len(self.urls)]
            if await self._follow(url, finished):
                continue
            index += 1
            await asyncio.sleep(0.2)

    async def _follow(self, url: str, finished: Callable[[], bool]) -> bool:
        """Read from url until it fails; True when the stream sent a notice to resume from."""
        self.hosts_used.append(url)
        try:
            timeout = httpx.Timeout(3, read=5)
            async with httpx.AsyncClient(
                base_url=url, timeout=timeout, verify=ssl_context()
            ) as client:
                async with client.stream(
                    "GET",
                    "/events/stream",
                    params=self.params,
                    headers={"Last-Event-ID": self.last_id},
                ) as response:
                    if response.status_code != 200:
                        self.errors.append(f"{url}: status {response.status_code}")
                        return False
                    reader = SseReader(response)
                    while not finished():
                        message = await reader.next(timeout_s=3)
                        if message.event == "notice":
                            # A server notice, not an event: its id is where to resume.
                            notice = message.json()
                            self.errors.append(f"{url}: {notice['message']}")
                            self.last_id = notice["resume_from"]
                            return True
                        if message.id is not None:
                            self.received.append(message.id)
                            self.last_id = message.id
        except (httpx.HTTPError, EOFError, TimeoutError) as error:
            self.errors.append(f"{url}: {type(error).__name__}")
            return False
        return True


def assert_no_gap_no_duplicate(follower: Follower, expected: list[str]) -> list[str]:
    """Every expected id in order, none twice; returns ids seen that the stream lost."""
    received = follower.received
    assert len(received) == len(set(received)), "duplicates"
    keys = [stream_key(entry_id) for entry_id in received]
    assert keys == sorted(keys), "out of order"
    missing = [entry_id for entry_id in expected if entry_id not in set(received)]
    assert missing == [], f"gap: {len(missing)} of {len(expected)} missing"
    return [entry_id for entry_id in received if entry_id not in set(expected)]


def test_a_client_that_loses_one_orchestrator_resumes_on_the_other(ha: HaStack) -> None:
    primary = ha.redis(ha.primary())
    start = primary.xadd(names.EVENTS_STREAM, {"type": "marker.start"})
    published: list[str] = []
    follower = Follower(
        list(FRONT_URLS),
        {"types": "hosts.tick", "access_token": API_TOKEN},
        start,
    )
    stopped = threading.Event()
    done = threading.Event()

    def publish() -> None:
        for index in range(200):
            published.append(
                primary.xadd(
                    names.EVENTS_STREAM, {"type": "hosts.tick", "data": json.dumps({"n": index})}
                )
            )
            if index == 60:
                ha.lab.check(ORCHESTRATOR, "systemctl stop 'shield-orchestrator@*.service'")
                stopped.set()
            time.sleep(0.02)
        done.set()

    def finished() -> bool:
        return done.is_set() and bool(follower.received) and follower.received[-1] == published[-1]

    async def scenario() -> None:
        await asyncio.gather(
            asyncio.to_thread(publish), asyncio.wait_for(follower.run(finished), 120)
        )

    try:
        run_async(scenario())
    finally:
        ha.lab.check(
            ORCHESTRATOR, "systemctl start shield-orchestrator@8000 shield-orchestrator@8001"
        )
    assert stopped.is_set()
    assert follower.received == published
    assert FRONT_URLS[1] in follower.hosts_used


@dataclass
class Load:
    accepted: dict[str, str] = field(default_factory=dict)  # task id -> chunk
    refused: int = 0
    dropped: int = 0
    posted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def post_tasks(ha: HaStack, load: Load, chunks: list[str], url: str, deadline: float) -> None:
    with ha.api(url, timeout_s=15) as client:
        for chunk in chunks:
            while True:
                assert time.monotonic() < deadline, "the API never came back"
                try:
                    reply = client.post(
                        "/tasks", json={"job_id": JOB, "chunk_id": chunk, "content": "x"}
                    )
                except httpx.TransportError:
                    with load.lock:
                        load.dropped += 1
                    time.sleep(0.05)
                    continue
                assert reply.status_code in (201, 503), reply.text
                if reply.status_code == 201:
                    with load.lock:
                        load.accepted[reply.json()["id"]] = chunk
                        load.posted += 1
                    break
                with load.lock:
                    load.refused += 1
                time.sleep(0.05)


def completed_ids(ha: HaStack, start: str) -> list[str]:
    """Every task id in the job's ingestion.completed events, with repeats."""
    found: list[str] = []
    for _, fields in ha.redis(ha.primary()).xrange(names.EVENTS_STREAM, min=start):
        if fields.get("type") == "ingestion.completed" and fields.get("job_id") == JOB:
            found += json.loads(fields["data"])["message_ids"]
    return found


def test_failover_under_load_loses_no_accepted_task_and_sse_clients_resume(
    ha: HaStack, capsys: pytest.CaptureFixture[str]
) -> None:
    watcher = ha.redis(REDIS_HOST)
    # A failover needs the sentinels to know each other (over the primary's hello channel).
    wait_until(
        lambda: all(ha.other_sentinels(host, port) == 2 for host, port in SENTINELS),
        "the sentinels to find each other",
    )
    start = watcher.xadd(names.EVENTS_STREAM, {"type": "marker.start"})
    seed = random.randrange(1_000_000)
    kill_at = random.Random(seed).randrange(TASKS // 5, TASKS * 4 // 5)
    load = Load()
    followers = [
        Follower([url], {"job_id": JOB, "access_token": API_TOKEN}, start) for url in API_URLS
    ]
    settled = threading.Event()
    failures: list[str] = []
    final: list[str] = []

    def recorded(target: Callable[..., None]) -> Callable[..., None]:
        """A thread's failure, kept for the test to report (a thread cannot fail the test)."""

        def run(*args: object) -> None:
            try:
                target(*args)
            except (AssertionError, OSError, httpx.HTTPError, redis.RedisError) as error:
                failures.append(f"{target.__name__}: {error}")
                settled.set()

        return run

    timeline: dict[str, float] = {}

    def kill_when_due() -> None:
        wait_until(lambda: load.posted >= kill_at, "the kill point", DEADLINE_S)
        timeline["killed"] = time.monotonic()
        # kill(1) on the main pid: `systemctl kill` reports cgroup errors inside nspawn.
        ha.lab.check(REDIS_HOST, "kill -KILL $(systemctl show -p MainPID --value redis-server)")
        wait_until(lambda: ha.primary() == REPLICA, "the replica's promotion", 60)
        timeline["promoted"] = time.monotonic()
        # As systemd would after a reboot: the old primary comes back, and Sentinel makes it
        # a replica, so WAIT 1 can succeed again.
        ha.lab.check(REDIS_HOST, "systemctl start redis-server")

    def run_load() -> None:
        deadline = time.monotonic() + DEADLINE_S
        chunks = [f"c{index}" for index in range(TASKS)]
        threads = [
            threading.Thread(
                target=recorded(post_tasks),
                args=(ha, load, chunks[index::POSTERS], API_URLS[index % 4], deadline),
            )
            for index in range(POSTERS)
        ]
        killer = threading.Thread(target=recorded(kill_when_due))
        for thread in [*threads, killer]:
            thread.start()
        for thread in [*threads, killer]:
            thread.join()
        assert failures == [], failures
        timeline["posted"] = time.monotonic()
        wait_until(
            lambda: set(load.accepted) <= set(completed_ids(ha, start)),
            "every accepted task to complete",
            DEADLINE_S,
            lambda: worker_group_report(ha, ha.redis(ha.primary())),
        )
        primary = ha.redis(ha.primary())
        # An ack the old primary had not yet passed on is lost with it: that task stays pending
        # on the promoted replica until a worker reclaims it, after claimIdleMs. The lag is as
        # /events/stats shows it: Redis's own, on the promoted replica, is garbled.
        wait_until(
            lambda: worker_group_stats(ha) == (0, 0),
            "the worker group to drain",
            DRAIN_AFTER_FAILOVER_S,
            lambda: worker_group_report(ha, primary),
        )
        final.extend(
            entry_id
            for entry_id, fields in primary.xrange(names.EVENTS_STREAM, min=start)
            if fields.get("job_id") == JOB
        )
        settled.set()

    def follower_done(follower: Follower) -> Callable[[], bool]:
        return lambda: (
            settled.is_set() and bool(follower.received) and (follower.received[-1] == final[-1])
        )

    async def scenario() -> None:
        await asyncio.gather(
            asyncio.to_thread(run_load),
            *(asyncio.wait_for(f.run(follower_done(f)), DEADLINE_S * 2) for f in followers),
        )

    began = time.monotonic()
    run_async(scenario())
    completions = completed_ids(ha, start)
    missing = [task for task in load.accepted if task not in set(completions)]
    assert missing == []
    duplicates = len(completions) - len(set(completions))
    lost_events = [assert_no_gap_no_duplicate(follower, final) for follower in followers]
    with capsys.disabled():
        print(
            f"\nlab-ha failover: {TASKS} tasks over {POSTERS} posters and 4 API processes;"
            f" primary SIGKILLed after {kill_at} (seed {seed}); promoted in"
            f" {timeline['promoted'] - timeline['killed']:.1f}s; {len(load.accepted)} accepted,"
            f" {load.refused} refused with 503 and retried, {load.dropped} dropped connections,"
            f" {duplicates} duplicate completions, 0 lost; all in"
            f" {timeline['posted'] - began:.1f}s. SSE: 4 clients, {len(final)} events each, no"
            f" gap or duplicate; events seen then lost with the old primary:"
            f" {[len(lost) for lost in lost_events]}"
        )


def test_the_old_primary_is_a_replica_and_up_converges(ha: HaStack) -> None:
    wait_until(
        lambda: ha.redis(REDIS_HOST).info("replication").get("master_link_status") == "up",
        "127.0.10.48 to replicate the new primary",
    )
    assert ha.primary() == REPLICA
    ha.engine.up()
    ha.engine.up("--expect-no-changes")
    outputs = ha.engine.outputs()
    assert outputs["currentPrimary"] == f"{REPLICA}:6379"
    assert outputs["redisNodes"][REDIS_HOST]["role"] == "slave"
    assert ha.primary() == REPLICA


def test_scaling_api_processes_touches_only_those_units(ha: HaStack) -> None:
    layout = json.loads(ha.engine.run("config", "get", "orchestrators", "--stack", "lab-ha"))
    pid_before = ha.lab.check(
        ORCHESTRATOR_2, "systemctl show -p MainPID --value shield-orchestrator@8000"
    ).strip()
    for processes, op in ((1, "delete"), (2, "create")):
        layout[1]["apiProcesses"] = processes
        ha.engine.set_config("orchestrators", json.dumps(layout))
        changed = ha.engine.changed()
        assert changed == {
            "orchestrator-127.0.10.9-api-8001": op,
            "orchestrator-127.0.10.9-health": "update",
            # The front's upstream list.
            "orchestrator-127.0.10.9-edge-config": "update",
        }
        ha.engine.up()
        state = ha.lab.ssh(ORCHESTRATOR_2, "systemctl is-active shield-orchestrator@8001").stdout
        assert state.strip() == ("inactive" if processes == 1 else "active")
        ha.engine.up("--expect-no-changes")
    pid_after = ha.lab.check(
        ORCHESTRATOR_2, "systemctl show -p MainPID --value shield-orchestrator@8000"
    ).strip()
    assert pid_after == pid_before
