"""What tracing costs a worker per task: ``python -m bench.trace_overhead``.

A micro-measurement, in one process, of the per-task work tracing adds: untraced (no OTLP
endpoint, the default) against traced (the worker's own setup: the SDK's provider, batch
processor and OTLP/HTTP exporter, sending to a local sink that reads and drops each export).
The cases run in turns, and each figure is the best of the rounds, so load on the machine
weighs on all of them alike. Traced rounds include the flush, so the export's own work (in
the processor's thread) is counted; the queue is made large enough that no span is dropped.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from service.core.settings import Settings
from service.tasks.processor import batch_event_fields
from service.tasks.task_format import Task, decode_task, task_fields
from service.tasks.tracing import UNTRACED, AttemptTracing, tracing_from_env

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BATCH = 10


class _Sink(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _attempts(tracing: AttemptTracing, tasks: list[Task], flush: Callable[[], object]) -> None:
    for task in tasks:
        with tracing.attempt(task):
            pass
    flush()


def _batches(tasks: list[Task]) -> None:
    for start in range(0, len(tasks), BATCH):
        batch_event_fields("ingestion.started", tasks[start : start + BATCH])


def _in_turns(cases: dict[str, Callable[[], object]], rounds: int, tasks: int) -> None:
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, run in cases.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    print(f"{tasks} tasks, best of {rounds} rounds in turns, per task:")
    for name, seconds in best.items():
        print(f"  {name:52} {seconds / tasks * 1e6:8.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_overhead")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    count = args.tasks
    plain = [
        task_fields(job_id="job", chunk_id=f"c{i}", content="text", timestamp="t")
        for i in range(count)
    ]
    traced = [{**fields, "traceparent": TRACEPARENT} for fields in plain]
    plain_tasks = [decode_task(f"{i}-0", fields) for i, fields in enumerate(plain)]
    traced_tasks = [decode_task(f"{i}-0", fields) for i, fields in enumerate(traced)]

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    # The SDK reads its batch settings from the process environment.
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(count + 1)
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}"}
    os.environ.update(environ)
    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:6379")  # type: ignore[call-arg]
    spans = tracing_from_env(settings, environ)
    from opentelemetry import trace

    provider: Any = trace.get_tracer_provider()
    _in_turns(
        {
            "decode, entry without traceparent": lambda: [
                decode_task("1-0", fields) for fields in plain
            ],
            "decode, entry with traceparent": lambda: [
                decode_task("1-0", fields) for fields in traced
            ],
            "batch events (10 a batch), untraced tasks": lambda: _batches(plain_tasks),
            "batch events (10 a batch), traced tasks": lambda: _batches(traced_tasks),
            "attempt, tracing off (the default)": lambda: _attempts(
                UNTRACED, traced_tasks, lambda: None
            ),
            "attempt span + OTLP export, traced task": lambda: _attempts(
                spans, traced_tasks, provider.force_flush
            ),
            "attempt span + OTLP export, untraced task (a root)": lambda: _attempts(
                spans, plain_tasks, provider.force_flush
            ),
        },
        args.rounds,
        count,
    )
    spans.shutdown()
    sink.shutdown()


if __name__ == "__main__":
    main()
