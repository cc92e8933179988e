"""Handing freed heap memory back to the OS (glibc's malloc_trim), at most every few seconds.

Large event bodies (tens of KB each) are allocated by malloc, not Python's small-object
allocator; freed, they stay in the process's heap, split by what is still alive, and glibc
returns them only from the top of the heap. A burst of replays to clients that then leave
would keep the process that much bigger for good. malloc_trim(0) releases every free page
of the heap. It costs about a millisecond per 100 MiB, so it runs when a client leaves, and
no more often than every TRIM_EVERY_S.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

TRIM_EVERY_S = 5.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    # Not glibc (musl, macOS): nothing to call, and nothing kept that it would release.
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)
    return trim


class FreedMemory:
    """Calls malloc_trim when asked, once per interval at most; a no-op without glibc."""

    def __init__(self, every_s: float = TRIM_EVERY_S) -> None:
        self._trim = _malloc_trim()
        self._every_s = every_s
        self._last_s = float("-inf")

    def release(self) -> bool:
        """Give free heap pages back to the OS unless that was done within the interval."""
        now = time.monotonic()
        if self._trim is None or now - self._last_s < self._every_s:
            return False
        self._last_s = now
        self._trim(0)
        return True
