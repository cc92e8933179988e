"""Writing the benchmark report: results.json, report.md, and beside each table its plot.

A section is written only when its results are there, so a run of some sections (--only)
into an empty folder still gives a report of what it measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import plots

Row = dict[str, Any]

FANOUT_COLUMNS = [
    "system", "transport", "subscribers", "rate_per_s", "published", "deliveries",
    "completeness", "deliveries_per_s", "p50_ms", "p95_ms", "p99_ms", "errors",
    "redis_reads_per_event", "redis_reads_per_delivery", "server_cpu_s_per_million",
]  # fmt: skip
PEER_FANOUT_COLUMNS = [
    "system", "transport", "subscribers", "rate_per_s", "published", "deliveries",
    "completeness", "p50_ms", "p99_ms", "errors", "server_cpu_s", "server_cpu_s_per_million",
    "redis_cpu_s_per_million",
]  # fmt: skip
QUEUE_COLUMNS = [
    "system", "workers", "tasks", "seconds", "tasks_per_s", "vs_raw", "vs_xadd",
    "vs_xadd_pipelined",
]  # fmt: skip


def _table(rows: list[Row], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |"
        )
    return "\n".join(lines)


def _image(path: Path, alt: str) -> str:
    return f"![{alt}]({path.name})"


def _series(row: Row) -> str:
    return f"{row['system']} ({row['transport']})"


def _share(text: str | None) -> float | None:
    return float(text.rstrip("%")) if text else None


def _unavailable(reasons: dict[str, str]) -> list[str]:
    return [f"- **{name} did not run:** {why}" for name, why in sorted(reasons.items())]


def header(results: dict[str, Any]) -> list[str]:
    measured = results.get("sections_measured", {})
    return [
        "# Benchmark report",
        "",
        f"Produced by `{results['command']}` on {results['machine']} at {results['started']}.",
        "Client processes, the servers, Redis and the publisher share the machine's cores, so",
        "absolute figures are this machine's; ratios travel better.",
        *(
            [
                "",
                "Sections and when each was last measured: "
                + ", ".join(f"{name} {at}" for name, at in measured.items())
                + ".",
            ]
            if measured
            else []
        ),  # fmt: skip
        "",
        "## Targets",
        "",
        _table(results["targets"], ["measure", "target", "measured", "met"]),
        "",
        *missed(results["targets"]),
    ]


# Why a missed target is missed, where a section of the report shows it.
WHY_MISSED = {
    "task throughput": "the worker spends its time in Python per batch and per task, not in"
    ' Redis: see "Where a worker\'s time goes" below',
    "SSE": "the API process and the subscribers' Python processes share two cores, and at"
    " 1,000 events/s the process is bound by its sends (CPU per delivery is in the"
    " Centrifugo section)",
}


def missed(targets: list[Row]) -> list[str]:
    """Each target this run missed, plainly: what was asked, what was measured, and why
    where the report shows it."""
    rows = [row for row in targets if row["met"] is False]
    if not rows:
        return []
    lines = ["Missed in this run:", ""]
    for row in rows:
        why = next((text for key, text in WHY_MISSED.items() if key in row["measure"]), "")
        lines.append(
            f"- **{row['measure']}**: asked {row['target']}, measured {row['measured']}"
            + (f"; {why}." if why else ".")
        )
    return [*lines, ""]


def fanout_section(rows: list[Row], out: Path, centrifugo: list[Row]) -> list[str]:
    # Centrifugo's cells (from fanout-peers) join the plots, so every fan-out plot has ours,
    # Centrifugo and the raw loop on the same axes; the table keeps to this section's cells.
    at_1000 = [row for row in rows + centrifugo if row["rate_per_s"] == 1000]
    images = [
        plots.lines(at_1000, "subscribers", "p99_ms", _series, out / "fanout_p99.png",
                    "p99 publish to receipt at 1,000 events/s", "concurrent subscribers",
                    "p99 (ms)", log_y=True),
        plots.lines(at_1000, "subscribers", "deliveries_per_s", _series,
                    out / "fanout_throughput.png", "deliveries per second at 1,000 events/s",
                    "concurrent subscribers", "deliveries/s", log_y=True),
        plots.lines(at_1000, "subscribers", "redis_reads_per_event", _series,
                    out / "fanout_redis_reads.png", "Redis reads per published event",
                    "concurrent subscribers", "reads per event", log_y=True),
        plots.lines(at_1000, "subscribers", "completeness", _series,
                    out / "fanout_completeness.png", "share of events each client received",
                    "concurrent subscribers", "completeness"),
    ]  # fmt: skip
    return [
        "## Fan-out: publish to receipt",
        "",
        "`ours` is one API process (one XREAD reader fanning out to every client). `original` is",
        "the original design rebuilt (bench/peers/original_design.py): one shared consumer group,",
        "one XREADGROUP loop per client. `raw-xread` is a redis-py XREAD loop per client, no HTTP.",
        "`ws-batch` is our WebSocket with `?batch=1`: the events queued for a socket at once go",
        "as one message holding a JSON array. Every client is equally light (bench/subscribers).",
        "Completeness below 1 means clients did not receive every event.",
        "",
        _table(rows, FANOUT_COLUMNS),
        "",
        " ".join(_image(path, path.stem) for path in images),
        "",
    ]


def _total_cpu_per_million(row: Row) -> float | None:
    """Server plus redis-server: the raw loop has no server, so Redis is all it costs."""
    parts = [row.get("server_cpu_s_per_million"), row.get("redis_cpu_s_per_million")]
    known = [part for part in parts if part is not None]
    return round(sum(known), 2) if known else None


def fanout_peers_section(section: dict[str, Any], out: Path) -> list[str]:
    rows, efficiency = section["rows"], section["efficiency"]
    images = [
        plots.lines(rows, "subscribers", "p99_ms", _series, out / "peers_fanout_p99.png",
                    "p99 publish to receipt, 1,000 events/s", "concurrent subscribers",
                    "p99 (ms)", log_y=True),
        plots.lines(rows, "subscribers", "completeness", _series,
                    out / "peers_fanout_completeness.png", "share of events delivered",
                    "concurrent subscribers", "completeness"),
        plots.lines(rows, "subscribers", _total_cpu_per_million, _series,
                    out / "peers_fanout_cpu.png",
                    "CPU s per million deliveries: server + redis-server",
                    "concurrent subscribers", "CPU seconds per 10^6 deliveries", log_y=True),
    ]  # fmt: skip
    ratio_rows = [
        {"subscribers": r["subscribers"], "system": name, "cpu": r[key]}
        for r in efficiency
        for name, key in ((r["ours"], "ours_cpu_s_per_million"),
                          (r["centrifugo"], "centrifugo_cpu_s_per_million"),
                          (f"{r['centrifugo']}, no history", "nohistory_cpu_s_per_million"))
        if r.get(key) is not None
    ]  # fmt: skip
    ratio_image = plots.bars(
        ratio_rows, "subscribers", "system", lambda r: r["cpu"], out / "peers_cpu_ratio.png",
        "server CPU per million deliveries, 1,000 events/s", "CPU s per 10^6 deliveries",
        group_label=lambda n: f"{n} subscribers",
    )  # fmt: skip
    peers = [f"- **{name}:** {text}" for name, text in section.get("peers", {}).items()]
    return [
        "## Fan-out beside Centrifugo: latency, completeness and CPU per delivery",
        "",
        "One redis-server for all. `ours` is one API process; `centrifugo` one Centrifugo node",
        "on its Redis engine; `raw-xread` a redis-py XREAD loop per client (no server: its",
        "cost is Redis's). The same client code reads our SSE and Centrifugo's uni_sse. CPU is",
        "utime + stime from /proc over the publishing window and the drain, per million",
        "deliveries: `server_cpu_s_per_million` for the server process,",
        "`redis_cpu_s_per_million` for redis-server. The publish paths differ by design:",
        "our producers XADD to Redis themselves, so our API process only fans out, while",
        "Centrifugo's process also takes the publishes (one POST /api/batch per 10 ms tick,",
        "about 100 requests/s) and counts their cost. Read CPU beside completeness: a server",
        "whose clients fell behind delivered less, and per delivery it may look cheaper. The",
        "clients are Python processes on the same cores: a server that sends each event in a",
        "write of its own makes them wake more often, so past 100 subscribers part of a p99",
        "is the clients' and the machine's, not the server's alone.",
        "",
        *peers,
        *_unavailable(section.get("unavailable", {})),
        *[
            f"- **{cell} did not finish:** {why}"
            for cell, why in sorted(section.get("failed_cells", {}).items())
        ],
        "",
        _table(rows, PEER_FANOUT_COLUMNS),
        "",
        " ".join(_image(path, path.stem) for path in images),
        "",
        "The headline: our server's CPU per delivery as a multiple of Centrifugo's with its",
        "channel history (goal: at most 2x, at equal completeness); beside it, the multiple of",
        "Centrifugo without history, plain pub/sub that no client can resume from.",
        "",
        _table(
            efficiency,
            [
                "subscribers",
                "ours",
                "centrifugo",
                "ours_cpu_s_per_million",
                "centrifugo_cpu_s_per_million",
                "ratio",
                "ours_completeness",
                "centrifugo_completeness",
                "goal_met",
                "nohistory_cpu_s_per_million",
                "ratio_vs_nohistory",
                "nohistory_completeness",
            ],
        ),  # fmt: skip
        "",
        _image(ratio_image, "cpu ratio"),
        "",
    ]


def queue_section(results: dict[str, Any], out: Path) -> list[str]:
    queue, xadd = results["queue"], results.get("redis_benchmark", [])
    by_workers = {"group_label": lambda w: f"{w} worker(s)"}
    rate_image = plots.bars(
        queue, "workers", "system", lambda r: r["tasks_per_s"], out / "queue_throughput.png",
        "Task queue throughput, no-op handler, first read to last ack", "tasks/s",
        **by_workers,
    )  # fmt: skip
    share_image = plots.bars(
        queue, "workers", "system", lambda r: _share(r.get("vs_raw")), out / "queue_vs_raw.png",
        "Throughput as a share of the raw redis-py loop", "% of the raw loop", **by_workers,
    )  # fmt: skip
    lines = [
        "## Task queue: enqueue to ack",
        "",
        "Every system gets the same tasks through its own client before its workers start, and",
        "is timed from its first read to its last ack as Redis shows it (bench/queue_systems.py).",
        "Ours emits two events per job and batch (ingestion.started and .completed) and counts",
        "its acks; the raw loop does XREADGROUP and XACK only. vs_xadd compares with",
        "redis-benchmark's XADD rate (below), the physical limit of this Redis here. Each row",
        "is the median of three runs taken in turns with the other systems.",
        "",
    ]
    if results.get("queue_systems"):
        lines += [_table(results["queue_systems"], ["system", "version", "configuration"]), ""]
    lines += _unavailable(results.get("queue_unavailable", {}))
    lines += [
        "",
        _table(queue, QUEUE_COLUMNS),
        "",
        f"{_image(rate_image, 'queue')} {_image(share_image, 'share of the raw loop')}",
        "",
    ]
    if xadd:
        xadd_image = plots.bars(
            [{**r, "system": "redis-benchmark XADD"} for r in xadd], "pipeline", "system",
            lambda r: r["xadd_per_s"], out / "redis_benchmark.png",
            "redis-benchmark XADD on this Redis", "XADD/s",
            group_label=lambda depth: f"pipeline {depth}",
        )  # fmt: skip
        lines += [_table(xadd, ["pipeline", "xadd_per_s"]), "", _image(xadd_image, "xadd"), ""]
    return lines


def worker_profile_section(profile: dict[str, Any]) -> list[str]:
    """Where a busy worker's time goes, with the flame graph beside it."""
    redis = profile.get("redis", {})
    scripts = redis.get("scripts", {})
    reads = redis.get("xreadgroup", {})
    return [
        "## Where a worker's time goes",
        "",
        f"{profile['configuration']}; {profile['samples']:,} samples, the worker draining"
        f" {profile['tasks_per_s_while_sampled']:,} tasks/s while sampled"
        " (py-spy slows it a little). Flame graph:"
        f" [{profile['flame_graph']}]({profile['flame_graph']}). Each share counts the"
        " samples with that step anywhere on the stack, so nested steps overlap.",
        "",
        _table(profile["steps"], ["step", "what", "share_of_samples"]),
        "",
        f"Redis's side: {profile['script_calls_per_batch']} script calls per batch, taking"
        f" {scripts.get('usec_per_call', 0):.0f} µs each on average, during which the worker"
        f" waits; the XREADGROUP inside the read script alone takes"
        f" {reads.get('usec_per_call', 0):.0f} µs.",
        "",
    ]


def jobs_section(jobs: dict[str, Any]) -> list[str]:
    """The jobs row: one POST /jobs against the same chunks posted one task at a time."""
    return [
        "## Jobs: a document in one request",
        "",
        f"{jobs['chunks']:,} chunks of {jobs['content_bytes']:,} bytes, admitted with no worker"
        f" running; medians of {jobs['runs']} runs in turns.",
        "",
        _table(jobs["rows"], ["request", "seconds", "chunks_per_s", "times_post_jobs"]),
        "",
    ]


def concurrency_section(row: dict[str, Any]) -> list[str]:
    """The slow-handler row: how close one worker at high concurrency gets to the ideal."""
    verdict = "within" if row["ratio"] <= 1.5 else "past"
    return [
        "## Concurrency: a slow handler, many at once",
        "",
        f"{row['tasks']:,} tasks, {row['configuration']}. Ideal: {row['ideal_s']:g} s.",
        "",
        _table(
            [
                {
                    "seconds": row["seconds"],
                    "ideal_s": row["ideal_s"],
                    "ratio to ideal": f"{row['ratio']:.2f}x",
                }
            ],
            ["seconds", "ideal_s", "ratio to ideal"],
        ),
        "",
        f"The measured time is {row['ratio']:.2f}× the ideal, {verdict} the goal of 1.5×.",
        "",
    ]


def memory_section(memory: list[Row], out: Path) -> list[str]:
    image = plots.lines(
        [{**r, "series": "API process"} for r in memory], "clients", "rss_mib",
        lambda r: r["series"], out / "memory.png", "API process memory",
        "connected SSE clients", "RSS (MiB)", log_x=False,
    )  # fmt: skip
    return [
        "## Memory",
        "",
        _table(memory, ["clients", "rss_mib"]),
        "",
        _image(image, "memory"),
        "",
    ]


def deploy_section(deploy: dict[str, Any] | str, out: Path) -> list[str]:
    if isinstance(deploy, str):
        return ["## Deploy", "", deploy, ""]
    timing_image = plots.bars(
        [{**r, "series": "seconds"} for r in deploy["timings"]], "operation", "series",
        lambda r: r["seconds"], out / "deploy_timings.png", "Real `pulumi up` on a fresh lab",
        "seconds",
    )  # fmt: skip
    names = sorted({name for steps in deploy["steps"].values() for name in steps})
    operations = list(deploy["steps"])
    rows = [
        {"step": name, **{op: deploy["steps"][op].get(name) for op in operations}} for name in names
    ]
    step_rows = [
        {"step": name, "operation": op, "seconds": seconds}
        for op, steps in deploy["steps"].items()
        for name, seconds in steps.items()
    ]
    steps_image = plots.bars(
        step_rows, "step", "operation", lambda r: r["seconds"], out / "deploy_steps.png",
        "Seconds per step, as the CLI reports them", "seconds",
    )  # fmt: skip
    return [
        "## Deploy",
        "",
        "The real engine (CLI, Python language host, command provider) on the real program,",
        f"against a lab rebuilt just before (new hosts), measured {deploy['measured']}. The cold",
        "up starts from an empty build directory, so it includes building the wheelhouse (pip",
        "download into an empty folder; pip's own HTTP cache on this machine was warm).",
        "",
        _table(deploy["timings"], ["operation", "seconds", "target_s", "met"]),
        "",
        _image(timing_image, "deploy timings"),
        "",
        "Where the time goes: each step's seconds as the CLI reports them. `whole update` is",
        "the engine's span; the rest of each operation is the CLI starting, the language host",
        "and the program (which builds the release and, when missing, the wheelhouse).",
        "",
        _table(rows, ["step", *operations]),
        "",
        _image(steps_image, "deploy steps"),
        "",
    ]


def scale_section(scale: dict[str, Any], out: Path) -> list[str]:
    fanout_image = plots.bars(
        scale["fanout"], "subscribers", "api_processes", lambda r: r["p99_ms"],
        out / "scale_fanout_p99.png", "SSE p99 by API processes (1,000 events/s)", "p99 (ms)",
        group_label=lambda n: f"{n} subscribers",
    )  # fmt: skip
    enqueue_rows = [
        {**r, "run": index, "series": f"task_replicas={r['task_replicas']}"}
        for index, r in enumerate(scale["enqueue"])
    ]
    enqueue_image = plots.bars(
        enqueue_rows, "run", "series", lambda r: r["tasks_per_s"], out / "scale_enqueue.png",
        "POST /tasks with and without WAIT 1, in turns", "tasks/s",
        group_label=lambda n: f"run {n + 1}",
    )  # fmt: skip
    return [
        "## Scale-out (`make bench-scale`)",
        "",
        f"Measured {scale.get('measured', 'n/a')}, everything on this 2-core machine: Redis, the",
        "API processes and the subscriber processes share both cores.",
        "",
        "SSE fan-out, subscribers split evenly over 1 or 2 API processes:",
        "",
        _table(
            scale["fanout"],
            [
                "api_processes",
                "subscribers",
                "rate_per_s",
                "completeness",
                "deliveries_per_s",
                "p50_ms",
                "p99_ms",
                "redis_reads_per_event",
                "redis_reads_per_event_per_process",
            ],
        ),  # fmt: skip
        "",
        _image(fanout_image, "scale fan-out"),
        "",
        "POST /tasks against a primary with one replica, 32 concurrent clients, with",
        "`SHIELD_TASK_REPLICAS` 0 (no WAIT) and 1 (WAIT 1 before the 201), alternated:",
        "",
        _table(
            scale["enqueue"],
            ["task_replicas", "tasks", "concurrency", "seconds", "tasks_per_s", "refused"],
        ),
        "",
        _image(enqueue_image, "scale enqueue"),
        "",
    ]


def write(results: dict[str, Any], out: Path) -> Path:
    """Write results.json, report.md and the plots into out; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    sections = header(results)
    if results.get("fanout"):
        peer_rows = (results.get("fanout_peers") or {}).get("rows", [])
        centrifugo = [row for row in peer_rows if row["system"].startswith("centrifugo")]
        sections += fanout_section(results["fanout"], out, centrifugo)
    if results.get("fanout_peers"):
        sections += fanout_peers_section(results["fanout_peers"], out)
    if results.get("queue"):
        sections += queue_section(results, out)
    if results.get("worker_profile"):
        sections += worker_profile_section(results["worker_profile"])
    if results.get("concurrency"):
        sections += concurrency_section(results["concurrency"])
    if results.get("jobs"):
        sections += jobs_section(results["jobs"])
    if results.get("memory"):
        sections += memory_section(results["memory"], out)
    if results.get("deploy"):
        sections += deploy_section(results["deploy"], out)
    if results.get("scale"):
        sections += scale_section(results["scale"], out)
    report = out / "report.md"
    report.write_text("\n".join(sections))
    return report
