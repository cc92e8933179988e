"""Handing freed heap memory back to the OS: glibc's malloc_trim, at most once per interval."""

from __future__ import annotations

import time

from service.core.freed_memory import FreedMemory


def test_memory_is_released_once_per_interval_at_most() -> None:
    freed = FreedMemory(every_s=0.2)
    assert freed.release() is True  # this machine's libc is glibc
    assert freed.release() is False
    time.sleep(0.25)
    assert freed.release() is True
