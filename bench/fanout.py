"""Fan-out: publish at a fixed rate, count what every subscriber receives and how late."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis

from bench.cpu import cpu_seconds, per_million
from harness.processes import REPO_ROOT
from service.events.wire import Event

READ_COMMANDS = ("xread", "xreadgroup", "xack", "xrange", "xrevrange")
TICK_S = 0.01


@dataclass
class FanoutResult:
    system: str
    transport: str
    subscribers: int
    rate_per_s: int
    duration_s: float
    published: int
    deliveries: int
    expected: int
    completeness: float
    deliveries_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    redis_reads: int
    redis_reads_per_event: float
    redis_reads_per_delivery: float
    # CPU of the server process (none for raw-xread) and of redis-server, from publishing
    # to the end of the drain, per million deliveries: what a delivery costs each of them.
    server_cpu_s: float | None = None
    server_cpu_s_per_million: float | None = None
    redis_cpu_s_per_million: float | None = None

    def row(self) -> dict[str, object]:
        return asdict(self)


def percentile(sorted_values: list[int], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index] / 1000


Sender = Callable[[list[dict[str, int]]], None]


def paced_publish(send: Sender, rate_per_s: int, duration_s: float) -> int:
    """Send events carrying their publish time, one batch per 10 ms tick, for duration_s.

    What is due is counted from the clock, not from the ticks: a slow send (an HTTP publish
    on a busy machine) makes the next batch larger instead of lowering the rate.
    """
    total = int(rate_per_s * duration_s)
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < duration_s:
        due = min(total, int(rate_per_s * (elapsed + TICK_S)))
        events = [{"t": time.time_ns() // 1000, "n": n} for n in range(sent, due)]
        if events:
            send(events)
            sent = due
        next_tick = started + (int(elapsed / TICK_S) + 1) * TICK_S
        time.sleep(max(0.0, next_tick - time.monotonic()))
    if sent < total:
        send([{"t": time.time_ns() // 1000, "n": n} for n in range(sent, total)])
    return total


def xadd_sender(client: redis.Redis) -> Sender:
    """Ours and the raw loop are published to: one pipeline of XADDs per tick."""

    def send(events: list[dict[str, int]]) -> None:
        pipeline = client.pipeline(transaction=False)
        for data in events:
            event = Event(type="bench.tick", data=data)
            pipeline.xadd("shield:events", event.to_fields(), maxlen=100_000, approximate=True)
        pipeline.execute()

    return send


def publish(client: redis.Redis, rate_per_s: int, duration_s: float) -> int:
    """XADD events carrying their publish time, in 10 ms ticks, for duration_s."""
    return paced_publish(xadd_sender(client), rate_per_s, duration_s)


def read_commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in READ_COMMANDS)


def run_cell(
    system: str,
    transport: str,
    target: str,
    redis_url: str,
    subscribers: int,
    rate_per_s: int,
    duration_s: float = 5.0,
    drain_s: float = 2.0,
    sender: Sender | None = None,
    server_pid: int | None = None,
    redis_pid: int | None = None,
    client_kind: str | None = None,
) -> FanoutResult:
    """One measurement: N subscribers in up to two client processes, one publisher.

    The publisher XADDs to Redis unless a sender is given (Centrifugo's HTTP API). With the
    pids, the CPU each process spends on the cell is measured from /proc. The subscribers
    are bench.subscribers of client_kind, by default the transport's name.
    """
    processes = []
    shares = [subscribers // 2, subscribers - subscribers // 2] if subscribers > 1 else [1]
    for share in shares:
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.subscribers",
                    client_kind or transport,
                    target,
                    str(share),
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for process in processes:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{system}/{transport}: subscribers did not connect ({line!r})")
    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    pids = {"server": server_pid, "redis": redis_pid}
    meters = {name: (pid, cpu_seconds(pid)) for name, pid in pids.items() if pid is not None}
    published = paced_publish(sender or xadd_sender(client), rate_per_s, duration_s)
    time.sleep(drain_s)
    cpu_s = {name: cpu_seconds(pid) - before for name, (pid, before) in meters.items()}
    reads = read_commands(client)
    client.close()
    deliveries, errors, latencies = 0, 0, []
    for process in processes:
        output, _ = process.communicate("", timeout=120)
        report = json.loads(output.strip().splitlines()[-1])
        deliveries += report["deliveries"]
        errors += report["errors"]
        latencies.extend(report["latencies_us"])
    latencies.sort()
    expected = published * subscribers
    return FanoutResult(
        system=system,
        transport=transport,
        subscribers=subscribers,
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        published=published,
        deliveries=deliveries,
        expected=expected,
        completeness=round(deliveries / expected, 4) if expected else 0.0,
        # Over the publishing window: the rate sustained while events kept arriving.
        deliveries_per_s=round(deliveries / duration_s, 1),
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99),
        errors=errors,
        redis_reads=reads,
        redis_reads_per_event=round(reads / published, 3) if published else 0.0,
        redis_reads_per_delivery=round(reads / deliveries, 4) if deliveries else 0.0,
        server_cpu_s=round(cpu_s["server"], 2) if "server" in cpu_s else None,
        server_cpu_s_per_million=per_million(cpu_s["server"], deliveries)
        if "server" in cpu_s
        else None,
        redis_cpu_s_per_million=per_million(cpu_s["redis"], deliveries)
        if "redis" in cpu_s
        else None,
    )
