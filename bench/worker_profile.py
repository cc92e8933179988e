"""Where a busy worker's time goes: py-spy on our worker draining no-op tasks.

The queue rows say how fast; this says why. The worker is sampled twice while it drains a
stream filled as the queue rows fill it: once into a flame graph (worker_profile.svg, kept
beside the report), once in py-spy's collapsed form, from which the share of samples under
each of the worker's own steps is counted. Redis's own side is read from its command
statistics: the time its scripts take per batch, during which the worker waits.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from bench.queue_systems import OURS, OURS_CONCURRENCY
from bench.servers import redis_server
from harness.processes import terminate

PROFILE_TASKS = 150_000
QUICK_PROFILE_TASKS = 30_000
SAMPLE_S = 5
QUICK_SAMPLE_S = 1
STARTUP_TIMEOUT_S = 30
# The worker's steps whose inclusive share the report lists, in the order a batch meets them.
STEPS = {
    "Worker._read_once": "the reader's turn (all below it, and its own waits' setup)",
    "TaskQueue.read": "one round trip: outbox, acks, read and begin (redis-py pipeline)",
    "Pipeline.execute": "redis-py's pipeline machinery and reply parsing",
    "BlockingConnectionPool.get_connection": "taking a connection from the pool",
    "Worker._take_outbox": "building the batch's ingestion.completed events",
    "Worker._launch": "holding, decoding and starting a batch",
    "decode_task": "decoding entries into tasks",
    "Worker._run": "running one task (rate limit check, handler, settling)",
    "TaskProcessor.run": "one attempt: context, handler call, ledger",
    "Worker._ack_loop": "the acker's own round trips",
    "JobKeys.script_context": "the job context every script is given",
    "LeaseKeeper._run": "the lease thread",
}


def _function(frame: str) -> str:
    """py-spy's collapsed frame 'name (path:line)' as 'Class.method'."""
    return frame.split(" (", 1)[0]


def step_shares(collapsed: str) -> tuple[int, dict[str, float]]:
    """Samples, and the share of them under each of STEPS (counted once per stack)."""
    total = 0
    under: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for name in {_function(frame) for frame in stack.split(";")} & STEPS.keys():
            under[name] += count
    return total, {name: round(under[name] / total, 3) if total else 0.0 for name in STEPS}


def _py_spy() -> str:
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        raise RuntimeError("py-spy is missing: pip install -r bench/requirements.txt")
    return binary


def _record(pid: int, seconds: int, output: Path, form: str) -> None:
    subprocess.run(
        [_py_spy(), "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
         "--format", form, "--output", str(output), "--nonblocking"],
        check=True, capture_output=True, timeout=seconds + 60,
    )  # fmt: skip


def _script_stats(client: redis.Redis) -> dict[str, Any]:
    stats = client.info("commandstats")
    wanted = {"cmdstat_evalsha": "scripts", "cmdstat_xreadgroup": "xreadgroup"}
    return {
        label: {"calls": stats[key]["calls"], "usec_per_call": stats[key]["usec_per_call"]}
        for key, label in wanted.items()
        if key in stats
    }


def measure_worker_profile(workdir: Path, out: Path, quick: bool) -> dict[str, Any]:
    """Profile one worker draining no-op tasks; writes out/worker_profile.svg."""
    tasks = QUICK_PROFILE_TASKS if quick else PROFILE_TASKS
    sample_s = QUICK_SAMPLE_S if quick else SAMPLE_S
    out.mkdir(parents=True, exist_ok=True)
    with redis_server(workdir / "profile-redis") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        env = OURS.env(server.url)
        OURS.fill(client, env, tasks)
        client.config_resetstat()
        worker = subprocess.Popen(
            OURS.command("profiled"), cwd=OURS.cwd, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not OURS.progress(client, tasks).started:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the profiled worker never started reading")
                time.sleep(0.01)
            started = time.monotonic()
            collapsed = workdir / "worker_profile.txt"
            _record(worker.pid, sample_s, collapsed, "raw")
            _record(worker.pid, sample_s, out / "worker_profile.svg", "flamegraph")
            elapsed_s = time.monotonic() - started
            read = int(
                next(
                    row["entries-read"]
                    for row in client.xinfo_groups("shield:ingestion_queue")
                    if row["name"] == "lightrag-workers"
                )
                or 0
            )
            if read >= tasks:
                raise RuntimeError(f"the worker drained all {tasks} tasks before sampling ended")
            scripts = _script_stats(client)
        finally:
            terminate([worker], groups=True)
            client.close()
    samples, shares = step_shares(collapsed.read_text())
    batches = scripts.get("xreadgroup", {}).get("calls", 0)
    return {
        "configuration": f"one worker, no-op handler, concurrency {OURS_CONCURRENCY},"
        f" {tasks:,} tasks filled; py-spy at 200 Hz for {sample_s} s, twice",
        "tasks_per_s_while_sampled": round(read / elapsed_s),
        "samples": samples,
        "steps": [
            {"step": name, "what": what, "share_of_samples": f"{shares[name]:.0%}"}
            for name, what in STEPS.items()
        ],
        "redis": scripts,
        "script_calls_per_batch": round(scripts.get("scripts", {}).get("calls", 0) / batches, 2)
        if batches
        else None,
        "flame_graph": "worker_profile.svg",
    }
