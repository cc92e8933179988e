"""The benchmark's sections: each measures one thing and stores it under its keys of results.

`python -m bench` runs FULL_RUN; `--only a,b` runs the named ones and merges them into the
results already on disk, so a quick look at one section leaves the others as measured.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.deploy import measure_deploy
from bench.fanout import run_cell
from bench.fanout_peers import measure_fanout_peers
from bench.jobs import measure_jobs
from bench.memory import rss_with_clients
from bench.peers.install import PeerUnavailable
from bench.peers.noop_handler import SLOW_HANDLER_S
from bench.queue import QueueResult, median_run, redis_benchmark_xadd, run_queue
from bench.queue_systems import BASELINES, OURS, PEERS, RAW, QueueSystem
from bench.scale import measure_scale
from bench.servers import http_app, redis_server
from bench.worker_profile import measure_worker_profile

QUEUE_REPEATS = 3
QUEUE_TASKS = 30_000
QUICK_QUEUE_TASKS = 3_000
# The handlers issue's row: 1,000 tasks whose handler awaits 200 ms, one worker at
# concurrency 50, against the ideal 1,000 × 0.2 / 50 = 4 s; the goal is within 1.5×.
SLOW_TASKS = 1_000
SLOW_CONCURRENCY = 50

# A section: results to add to, quick, a scratch directory, and the report's directory.
Section = Callable[[dict[str, Any], bool, Path, Path], None]


def fanout_matrix(quick: bool) -> dict[str, list[tuple[int, int]]]:
    subscribers = [1, 10] if quick else [1, 10, 100, 1000]
    return {
        "ours/sse": [(n, rate) for n in subscribers for rate in (100, 1000)]
        + ([] if quick else [(100, 5000)]),
        "ours/ws": [(n, 1000) for n in subscribers],
        # The WebSocket with ?batch=1 (a JSON array per message), next to SSE in the same run.
        "ours/ws-batch": [(n, 1000) for n in subscribers],
        "raw-xread/xread": [(n, 1000) for n in subscribers],
        "original/sse": [(n, 1000) for n in subscribers],
    }


def _logged(row: dict[str, Any]) -> dict[str, Any]:
    print(row, file=sys.stderr)
    return row


def fanout(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """Fan-out cells of ours and the baselines, and the API's memory with idle clients."""
    duration_s = 2.0 if quick else 5.0
    rows: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    matrix = fanout_matrix(quick)
    with redis_server(workdir / "fanout-redis") as redis:
        with http_app("service.main:app", redis.url, block_ms=1000) as (url, pid):
            for clients in [0, 10] if quick else [0, 100, 1000]:
                rss_mib = round(rss_with_clients(url, pid, clients) / 2**20, 1)
                memory.append({"clients": clients, "rss_mib": rss_mib})
            for key in ("ours/sse", "ours/ws", "ours/ws-batch"):
                transport = key.split("/")[1]
                for n, rate in matrix[key]:
                    cell = run_cell(
                        "ours", transport, url, redis.url, n, rate, duration_s,
                        server_pid=pid, redis_pid=redis.pid,
                    )  # fmt: skip
                    rows.append(_logged(cell.row()))
        for n, rate in matrix["raw-xread/xread"]:
            cell = run_cell("raw-xread", "xread", redis.url, redis.url, n, rate, duration_s)
            rows.append(_logged(cell.row()))
        with http_app("bench.peers.original_design:app", redis.url) as (url, _):
            for n, rate in matrix["original/sse"]:
                cell = run_cell("original", "sse", url, redis.url, n, rate, duration_s)
                rows.append(_logged(cell.row()))
    results.update(fanout=rows, memory=memory)


def fanout_peers(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """Ours beside Centrifugo and the raw loop, with CPU per delivery."""
    results["fanout_peers"] = measure_fanout_peers(workdir / "fanout-peers", quick)


def _runnable(systems: tuple[QueueSystem, ...]) -> tuple[list[QueueSystem], dict[str, str]]:
    """The systems that can run here, and why each of the others cannot."""
    runnable, unavailable = [], {}
    for system in systems:
        try:
            system.prepare()
            runnable.append(system)
        except PeerUnavailable as error:
            unavailable[system.name] = str(error)
    return runnable, unavailable


def _queue_runs(
    systems: tuple[QueueSystem, ...], quick: bool, workdir: Path
) -> tuple[list[dict[str, Any]], dict[str, str], list[dict[str, Any]]]:
    """Median rows of every runnable system at 1, 2 and 4 workers; why others did not run;
    redis-benchmark's XADD rates on the same Redis."""
    runnable, unavailable = _runnable(systems)
    tasks = QUICK_QUEUE_TASKS if quick else QUEUE_TASKS
    rows: list[dict[str, Any]] = []
    with redis_server(workdir / "queue-redis") as redis:
        for workers in [1] if quick else [1, 2, 4]:
            # Taken in turns, several times: a slow spell of this shared machine then hits
            # every system, and the median run of each is compared.
            runs: dict[str, list[QueueResult]] = {system.name: [] for system in runnable}
            for _ in range(1 if quick else QUEUE_REPEATS):
                for system in runnable:
                    runs[system.name].append(run_queue(system, redis.url, workers, tasks))
                    print(runs[system.name][-1].row(), file=sys.stderr)
            rows += [median_run(runs[system.name]).row() for system in runnable]
        xadd = [
            {"pipeline": depth, "xadd_per_s": redis_benchmark_xadd(redis.port, depth)}
            for depth in (1, 16)
        ]
    return rows, unavailable, xadd


def describe_queue(systems: tuple[QueueSystem, ...]) -> list[dict[str, str]]:
    return [
        {"system": s.name, "version": s.version or "-", "configuration": s.configuration}
        for s in systems
    ]


def queue(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """Ours, the raw loop, FastStream and the installed peers, all in the same turns."""
    rows, unavailable, xadd = _queue_runs(BASELINES + PEERS, quick, workdir)
    results.update(
        queue=add_ratios(rows, xadd),
        redis_benchmark=xadd,
        queue_unavailable=unavailable,
        queue_systems=describe_queue(BASELINES + PEERS),
    )


def queue_peers(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """Only the raw loop and the peers, merged over the same systems' rows on disk."""
    rows, unavailable, _ = _queue_runs((RAW, *PEERS), quick, workdir)
    measured = {(row["system"], row["workers"]) for row in rows}
    kept = [r for r in results.get("queue", []) if (r["system"], r["workers"]) not in measured]
    results["queue"] = add_ratios(kept + rows, results.get("redis_benchmark", []))
    tried = {RAW.name, *(peer.name for peer in PEERS)}
    earlier = results.get("queue_unavailable", {})
    results["queue_unavailable"] = {
        **{name: why for name, why in earlier.items() if name not in tried},
        **unavailable,
    }
    results["queue_systems"] = describe_queue(BASELINES + PEERS)


def add_ratios(queue: list[dict[str, Any]], xadd: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each queue result as a share of the raw loop and of redis-benchmark's XADD rates."""
    rates = {row["pipeline"]: row["xadd_per_s"] for row in xadd}
    raw = {r["workers"]: r["tasks_per_s"] for r in queue if r["system"] == "raw redis-py"}
    for row in queue:
        if row["workers"] in raw:
            row["vs_raw"] = f"{row['tasks_per_s'] / raw[row['workers']]:.0%}"
        if 1 in rates and 16 in rates:
            row["vs_xadd"] = f"{row['tasks_per_s'] / rates[1]:.0%}"
            row["vs_xadd_pipelined"] = f"{row['tasks_per_s'] / rates[16]:.1%}"
    return queue


def concurrency(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """One worker running a slow handler many at a time, against the ideal time."""
    system = dataclasses.replace(
        OURS,
        name="ours, 200 ms handler",
        configuration=f"one worker, SHIELD_WORKER_CONCURRENCY={SLOW_CONCURRENCY},"
        f" a handler that awaits {SLOW_HANDLER_S * 1000:.0f} ms",
        extra_env={
            **OURS.extra_env,
            "SHIELD_TASK_HANDLER": "bench.peers.noop_handler:sleep_200ms",
            "SHIELD_WORKER_CONCURRENCY": str(SLOW_CONCURRENCY),
        },
    )
    ideal_s = SLOW_TASKS * SLOW_HANDLER_S / SLOW_CONCURRENCY
    with redis_server(workdir / "concurrency-redis") as redis:
        result = run_queue(system, redis.url, 1, SLOW_TASKS)
    results["concurrency"] = {
        "configuration": system.configuration,
        "tasks": SLOW_TASKS,
        "seconds": round(result.seconds, 2),
        "ideal_s": ideal_s,
        "ratio": round(result.seconds / ideal_s, 2),
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def jobs(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """POST /jobs with 1,000 chunks against the same chunks as 1,000 POST /tasks calls."""
    results["jobs"] = measure_jobs(workdir / "jobs", quick)
    results["jobs"]["measured"] = datetime.now(UTC).isoformat(timespec="seconds")


def deploy(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """The real `pulumi up` timings on a freshly rebuilt lab (quick changes nothing here)."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    results["deploy"] = {**measure_deploy(workdir / "deploy"), "measured": started}


def scale(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """1 against 2 API processes, and what WAIT 1 costs POST /tasks."""
    results["scale"] = measure_scale(workdir / "scale", quick)
    results["scale"]["measured"] = datetime.now(UTC).isoformat(timespec="seconds")


def worker_profile(results: dict[str, Any], quick: bool, workdir: Path, out: Path) -> None:
    """py-spy on one busy worker: the flame graph beside the report, and step shares."""
    results["worker_profile"] = measure_worker_profile(workdir / "profile", out, quick)
    results["worker_profile"]["measured"] = datetime.now(UTC).isoformat(timespec="seconds")


SECTIONS: dict[str, Section] = {
    "fanout": fanout,
    "fanout-peers": fanout_peers,
    "queue": queue,
    "queue-peers": queue_peers,
    "concurrency": concurrency,
    "jobs": jobs,
    "deploy": deploy,
    "scale": scale,
    "profile": worker_profile,
}
FULL_RUN = ("fanout", "fanout-peers", "queue", "profile", "concurrency", "jobs", "deploy")
