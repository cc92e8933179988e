"""RSS of one API process with idle SSE clients connected."""

from __future__ import annotations

import subprocess
import sys
import time

from harness.processes import REPO_ROOT, rss_bytes


def rss_with_clients(base_url: str, pid: int, clients: int) -> int:
    """Connect the clients, let the process settle, read its RSS, disconnect."""
    if clients == 0:
        time.sleep(1)
        return rss_bytes(pid)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.subscribers", "sse", base_url, str(clients)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("memory: clients did not connect")
    time.sleep(2)
    rss = rss_bytes(pid)
    process.communicate("", timeout=60)
    return rss
