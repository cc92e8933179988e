"""The front-end groups' meaning: how far each application's clients have got.

The original design creates ``ag-ui-frontend``, ``power-ui-frontend`` and
``dashboard-frontend`` on the events stream and reads none of them. Here a client says which
application it is (``?app=`` on /events/stream and /events/ws; AG-UI runs are
``ag-ui-frontend``, the dashboard's tail ``dashboard-frontend``), and about once a second each
API process moves every application's group cursor forward to the newest id it has sent to
any client of that application: one script per application per second, never per event or
per client. A group's lag is then the events no client of that application has been sent,
and ``/events/stats`` shows it.

Redis counts no range without reading it, so keeping the lag known costs a count of entries;
each move counts at most COUNT_LIMIT entries in each of two ranges (after the new cursor, or
from the old cursor to the new; see lua/advance_group.lua). When an application's newest
client is more than that far behind the head and also jumped more than that since the last
move (a replay from far back), the group still moves but its lag reads as unknown
(``lag_known: false``) until its clients are back within COUNT_LIMIT entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.core import names
from service.core.lua import LuaScript
from service.core.settings import Settings
from service.events.bus import stop_task
from service.events.errors import EventError
from service.events.stream_ids import is_after

log = logging.getLogger(__name__)

ADVANCE_EVERY_S = 1.0
# Entries counted per range per move, to keep the lag known at a bounded cost: with events of
# up to max_event_bytes (64 KiB), two ranges read at most 32 MiB inside Redis, and ordinary
# events of a few hundred bytes about 150 KB. A live client is a few entries behind at most.
COUNT_LIMIT = 256


class UnknownApplication(EventError):
    """``?app=`` names no front-end group."""


def front_end_apps(settings: Settings) -> tuple[str, ...]:
    """The event groups that stand for front-end applications: all but the collector's."""
    return tuple(group for group in settings.event_groups if group != names.METRICS_GROUP)


def application(value: str | None, settings: Settings) -> str | None:
    """A client's ``?app=``, checked against the front-end groups; None when not given."""
    if value is None or value == "":
        return None
    apps = front_end_apps(settings)
    if value not in apps:
        raise UnknownApplication(f"app must be one of {', '.join(apps)}, not {value!r}")
    return value


def newest_by_app(cursors: Iterable[tuple[str | None, str]]) -> dict[str, str]:
    """The newest cursor of each application among (app, cursor) pairs; pure."""
    newest: dict[str, str] = {}
    for app, cursor in cursors:
        if app and (app not in newest or is_after(cursor, newest[app])):
            newest[app] = cursor
    return newest


class FrontEndCursors:
    """Moves the front-end groups forward from what this process has sent."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        sent: Callable[[], Iterable[tuple[str | None, str]]],
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._sent = sent
        self._advance = LuaScript(redis, "service.events", "advance_group")
        self._moved: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="front-end-groups")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await stop_task(self._task)

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(ADVANCE_EVERY_S)
            try:
                await self.advance_once()
            except RedisError as error:
                log.warning("front-end groups: %s", error)

    async def advance_once(self) -> None:
        """One script per application whose clients got further since the last call."""
        for app, cursor in newest_by_app(self._sent()).items():
            if app in self._moved and not is_after(cursor, self._moved[app]):
                continue
            await self._advance([self._stream], [app, cursor, COUNT_LIMIT])
            self._moved[app] = cursor
