"""The one timer per stream that keeps a send timeout: it fires for a send stuck past the
timeout, once, and never for sends that keep completing."""

from __future__ import annotations

import asyncio

from service.api.send_watchdog import SendWatchdog


async def test_a_send_stuck_past_the_timeout_fires_once() -> None:
    fired: list[float] = []
    loop = asyncio.get_running_loop()
    watchdog = SendWatchdog(0.2, lambda: fired.append(loop.time()))
    watchdog.start()
    began = loop.time()
    watchdog.began()
    await asyncio.sleep(0.6)
    watchdog.ended()
    watchdog.stop()
    assert watchdog.fired
    assert len(fired) == 1
    # Not before the timeout; the timer looks four times per timeout, so about 1.25 timeouts
    # after the send began at most (a busy loop may run the timer a little late).
    assert 0.2 <= fired[0] - began <= 0.5


async def test_sends_that_keep_completing_never_fire() -> None:
    fired: list[bool] = []
    watchdog = SendWatchdog(0.2, lambda: fired.append(True))
    watchdog.start()
    for _ in range(40):  # 0.8 s of short sends, none longer than the timeout
        watchdog.began()
        await asyncio.sleep(0.01)
        watchdog.ended()
        await asyncio.sleep(0.01)
    watchdog.stop()
    assert not watchdog.fired and fired == []


async def test_overlapping_sends_are_timed_from_the_oldest() -> None:
    fired: list[bool] = []
    watchdog = SendWatchdog(0.2, lambda: fired.append(True))
    watchdog.start()
    watchdog.began()
    await asyncio.sleep(0.1)
    watchdog.began()  # a second send while the first is still in flight
    watchdog.ended()
    await asyncio.sleep(0.3)
    watchdog.stop()
    assert fired == [True]
