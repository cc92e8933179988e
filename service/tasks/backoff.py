"""Retry delays; pure.

The n-th retry of a task waits between half and all of min(max_ms, base_ms × 2^(n-1)): the
exponent spreads a failing service's load out, the jitter keeps a burst of failures from
coming back as a burst.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_ms(
    retry: int, base_ms: int, max_ms: int, draw: Callable[[], float] = random.random
) -> int:
    """The wait before retry number `retry` (1 for the first), jittered by draw() in [0, 1)."""
    ceiling = min(max_ms, base_ms * 2 ** max(0, retry - 1))
    return int(ceiling * (0.5 + 0.5 * draw()))
