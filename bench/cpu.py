"""CPU time a process has used, from /proc, for the cost of a delivery."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of the process so far, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5), counted from the state (field 3) at index 0.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def per_million(cpu_s: float, deliveries: int) -> float | None:
    """CPU seconds per million deliveries; None when nothing was delivered."""
    return round(cpu_s / deliveries * 1e6, 2) if deliveries else None
