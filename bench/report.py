"""Writing the benchmark report: JSON, a markdown table per section, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |"
        )
    return "\n".join(lines)


def _plot_fanout(
    fanout: list[dict[str, Any]], metric: str, ylabel: str, path: Path, rate: int
) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[int, float]]] = {}
    for row in fanout:
        if row["rate_per_s"] != rate or row.get(metric) is None:
            continue
        series.setdefault(f"{row['system']} ({row['transport']})", []).append(
            (row["subscribers"], row[metric])
        )
    for label, points in sorted(series.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.set_xscale("log")
    if metric != "completeness":
        axes.set_yscale("log")
    axes.set_xlabel("concurrent subscribers")
    axes.set_ylabel(ylabel)
    axes.set_title(f"{ylabel} at {rate} events/s")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_queue(queue: list[dict[str, Any]], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    systems = sorted({row["system"] for row in queue})
    worker_counts = sorted({row["workers"] for row in queue})
    width = 0.8 / len(systems)
    for index, system in enumerate(systems):
        values = [
            next(
                (r["tasks_per_s"] for r in queue if r["system"] == system and r["workers"] == w), 0
            )
            for w in worker_counts
        ]
        axes.bar(
            [w_i + index * width for w_i in range(len(worker_counts))], values, width, label=system
        )
    axes.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(worker_counts))])
    axes.set_xticklabels([f"{w} worker(s)" for w in worker_counts])
    axes.set_ylabel("tasks/s, enqueue to ack")
    axes.set_title("Task queue throughput (no-op handler, batches of 10)")
    axes.legend()
    axes.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_memory(memory: list[dict[str, Any]], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot([r["clients"] for r in memory], [r["rss_mib"] for r in memory], marker="o")
    axes.set_xlabel("connected SSE clients")
    axes.set_ylabel("RSS (MiB)")
    axes.set_title("API process memory")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _deploy_section(deploy: dict[str, Any] | str) -> list[str]:
    if isinstance(deploy, str):
        return [deploy, ""]
    lines = [
        "The real engine (CLI, Python language host, command provider) on the real program,",
        f"against a lab rebuilt just before (new hosts), measured {deploy['measured']}. The cold",
        "up starts from an empty build directory, so it includes building the wheelhouse (pip",
        "download into an empty folder; pip's own HTTP cache on this machine was warm).",
        "",
        _table(deploy["timings"], ["operation", "seconds", "target_s", "met"]),
        "",
        "Where the time goes: each step's seconds as the CLI reports them. `whole update` is",
        "the engine's span; the rest of each operation is the CLI starting, the language host",
        "and the program (which builds the release and, when missing, the wheelhouse).",
        "",
    ]
    names = sorted({name for steps in deploy["steps"].values() for name in steps})
    operations = list(deploy["steps"])
    rows = [
        {"step": name, **{op: deploy["steps"][op].get(name) for op in operations}} for name in names
    ]
    lines += [_table(rows, ["step", *operations]), ""]
    return lines


def _scale_section(scale: dict[str, Any] | None) -> list[str]:
    if not scale:
        return []
    return [
        "",
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
        ),
        "",
        "POST /tasks against a primary with one replica, 32 concurrent clients, with",
        "`SHIELD_TASK_REPLICAS` 0 (no WAIT) and 1 (WAIT 1 before the 201), alternated:",
        "",
        _table(
            scale["enqueue"],
            ["task_replicas", "tasks", "concurrency", "seconds", "tasks_per_s", "refused"],
        ),
        "",
    ]


def write(results: dict[str, Any], out: Path) -> Path:
    """Write results.json, report.md and the plots into out; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    fanout, queue, memory = results["fanout"], results["queue"], results["memory"]
    _plot_fanout(
        fanout, "p99_ms", "p99 latency, publish to receipt (ms)", out / "fanout_p99.png", 1000
    )
    _plot_fanout(
        fanout, "deliveries_per_s", "deliveries per second", out / "fanout_throughput.png", 1000
    )
    _plot_fanout(
        fanout,
        "redis_reads_per_event",
        "Redis reads per published event",
        out / "fanout_redis_reads.png",
        1000,
    )
    _plot_fanout(
        fanout,
        "completeness",
        "share of events each client received",
        out / "fanout_completeness.png",
        1000,
    )
    _plot_queue(queue, out / "queue_throughput.png")
    _plot_memory(memory, out / "memory.png")
    fanout_columns = [
        "system", "transport", "subscribers", "rate_per_s", "published", "deliveries",
        "completeness", "deliveries_per_s", "p50_ms", "p95_ms", "p99_ms", "errors",
        "redis_reads_per_event", "redis_reads_per_delivery",
    ]  # fmt: skip
    sections = [
        "# Benchmark report",
        "",
        f"Produced by `{results['command']}` on {results['machine']} at {results['started']}.",
        "Every number comes from this one run. Client processes, the API, Redis and the publisher",
        "share the machine's cores, so absolute figures are this machine's; ratios travel better.",
        "",
        "## Targets",
        "",
        _table(results["targets"], ["measure", "target", "measured", "met"]),
        "",
        "## Fan-out: publish to receipt",
        "",
        "`ours` is one API process (one XREAD reader fanning out to every client). `original` is",
        "the original design rebuilt (bench/peers/original_design.py): one shared consumer group,",
        "one XREADGROUP loop per client. `raw-xread` is a redis-py XREAD loop per client, no HTTP.",
        "`ws-batch` is our WebSocket with `?batch=1`: the events queued for a socket at once go",
        "as one message holding a JSON array. Every client is equally light (bench/subscribers).",
        "Completeness below 1 means clients did not receive every event.",
        "",
        _table(fanout, fanout_columns),
        "",
        "![p99](fanout_p99.png) ![throughput](fanout_throughput.png)",
        "![redis reads](fanout_redis_reads.png) ![completeness](fanout_completeness.png)",
        "",
        "## Task queue: enqueue to ack",
        "",
        "Ours emits two events per job and batch (ingestion.started and .completed) and counts",
        "its acks; the raw loop does XREADGROUP and XACK only. vs_xadd compares with",
        "redis-benchmark's XADD rate (below), the physical limit of this Redis here. Each row",
        "is the median of three runs taken in turns with the other systems.",
        "",
        _table(
            queue,
            [
                "system",
                "workers",
                "tasks",
                "seconds",
                "tasks_per_s",
                "vs_raw",
                "vs_xadd",
                "vs_xadd_pipelined",
            ],
        ),  # fmt: skip
        "",
        _table(results["redis_benchmark"], ["pipeline", "xadd_per_s"]),
        "",
        "![queue](queue_throughput.png)",
        "",
        "## Memory",
        "",
        _table(memory, ["clients", "rss_mib"]),
        "",
        "![memory](memory.png)",
        "",
        "## Deploy",
        "",
        *_deploy_section(results["deploy"]),
        *_scale_section(results.get("scale")),
    ]
    report = out / "report.md"
    report.write_text("\n".join(sections))
    return report
