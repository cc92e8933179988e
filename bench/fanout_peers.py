"""Fan-out beside Centrifugo: the same cells, the same clients, and the CPU each server spends.

Ours (SSE, and the WebSocket with ?batch=1), Centrifugo on its uni_sse, and the raw redis-py
XREAD loop (no server at all: its cost is Redis's alone) are measured at 100 and 1,000
subscribers x 1,000 events/s on one redis-server. The headline is the CPU seconds a server
process spends per million deliveries, ours against Centrifugo's, read at equal completeness.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from bench import centrifugo
from bench.fanout import run_cell
from bench.peers.install import PeerUnavailable
from bench.servers import http_app, redis_server

RATE_PER_S = 1000
SUBSCRIBERS = (100, 1000)
QUICK_SUBSCRIBERS = (10, 100)
OUR_TRANSPORTS = ("sse", "ws-batch")
# Centrifugo's transports, as the report names them, with the bench.subscribers kind of each.
CENTRIFUGO_CLIENTS = {"uni_sse": "uni_sse", "ws": "centrifugo-ws"}
# The system name of each Centrifugo setting: with the channel history (the headline, as
# ours keeps its stream), and without (plain pub/sub, Centrifugo at its cheapest).
CENTRIFUGO_SETTINGS = {"centrifugo": True, "centrifugo-nohistory": False}
# Which of Centrifugo's transports each of ours is weighed against: SSE against SSE, and our
# batched WebSocket against its WebSocket, which also writes what is queued in one frame.
COUNTERPART = {"sse": "uni_sse", "ws-batch": "ws"}


def _log(row: dict[str, Any]) -> dict[str, Any]:
    print(f"fanout-peers: {row}", file=sys.stderr)
    return row


def measure_fanout_peers(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """Every cell of ours, Centrifugo's and the raw loop's; why a peer could not run."""
    duration_s = 2.0 if quick else 5.0
    counts = QUICK_SUBSCRIBERS if quick else SUBSCRIBERS
    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    failed: dict[str, str] = {}
    with redis_server(workdir / "redis") as redis:

        def measure(system: str, transport: str, target: str, **extra: Any) -> None:
            for count in counts:
                try:
                    result = run_cell(
                        system, transport, target, redis.url, count, RATE_PER_S, duration_s,
                        redis_pid=redis.pid, **extra,
                    )  # fmt: skip
                except (httpx.HTTPError, RuntimeError) as error:
                    # A server past saturation (its publish API timing out) is a result to
                    # report, not a reason to lose the run's other cells.
                    failed[f"{system} ({transport}), {count} subscribers"] = (
                        f"{type(error).__name__}: {error}"
                    )
                    continue
                rows.append(_log(result.row()))

        with http_app("service.main:app", redis.url, block_ms=1000) as (url, pid):
            for transport in OUR_TRANSPORTS:
                measure("ours", transport, url, server_pid=pid)
        for system, history in CENTRIFUGO_SETTINGS.items():
            try:
                with centrifugo.centrifugo_node(workdir / system, redis.url, history) as node:
                    publisher = centrifugo.BatchPublisher(node.base_url)
                    try:
                        for transport, kind in CENTRIFUGO_CLIENTS.items():
                            measure(
                                system, transport, node.base_url, sender=publisher.send,
                                server_pid=node.pid, client_kind=kind,
                            )  # fmt: skip
                    finally:
                        publisher.close()
            except PeerUnavailable as error:
                unavailable[system] = str(error)
        measure("raw-xread", "xread", redis.url)
    return {
        "rows": rows,
        "efficiency": efficiency(rows),
        "unavailable": unavailable,
        "failed_cells": failed,
        "peers": {"centrifugo": centrifugo.describe()},
    }


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 2) if ours and theirs else None


def efficiency(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per transport and subscriber count: our CPU per delivery as a multiple of
    Centrifugo's on its counterpart transport (the goal is read against the setting with
    history; the one without is shown beside it)."""
    by_cell = {(r["system"], r["transport"], r["subscribers"]): r for r in rows}
    ratios = []
    for (system, transport, count), ours in sorted(by_cell.items()):
        counterpart = COUNTERPART.get(transport, "")
        theirs = by_cell.get(("centrifugo", counterpart, count))
        if system != "ours" or theirs is None:
            continue
        plain = by_cell.get(("centrifugo-nohistory", counterpart, count), {})
        ours_cpu = ours["server_cpu_s_per_million"]
        ratio = _ratio(ours_cpu, theirs["server_cpu_s_per_million"])
        ratios.append(
            {
                "subscribers": count,
                "ours": f"ours ({transport})",
                "centrifugo": f"centrifugo ({counterpart})",
                "ours_cpu_s_per_million": ours_cpu,
                "centrifugo_cpu_s_per_million": theirs["server_cpu_s_per_million"],
                "ratio": ratio,
                "ours_completeness": ours["completeness"],
                "centrifugo_completeness": theirs["completeness"],
                "goal_met": ratio is not None
                and ratio <= 2.0
                and ours["completeness"] >= theirs["completeness"],
                "nohistory_cpu_s_per_million": plain.get("server_cpu_s_per_million"),
                "ratio_vs_nohistory": _ratio(ours_cpu, plain.get("server_cpu_s_per_million")),
                "nohistory_completeness": plain.get("completeness"),
            }
        )
    return ratios
