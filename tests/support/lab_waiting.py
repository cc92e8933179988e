"""Waiting on a lab condition, failing as an assertion that names it."""

from __future__ import annotations

from collections.abc import Callable

from harness import waiting


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout_s: float = 60,
    explain: Callable[[], str] = lambda: "",
) -> None:
    """Poll a lab condition; on a timeout, fail naming it, plus what explain() reports.

    An AssertionError, not the TimeoutError of waiting.wait_until: the lab tests' threads
    report assertion failures, and a lab condition that never holds is one."""
    try:
        waiting.wait_until(condition, timeout_s, interval_s=0.25, describe=what)
    except TimeoutError as timeout:
        raise AssertionError(f"{timeout}{explain()}") from None
