"""Redis Lua scripts: each lives in a ``.lua`` file beside the code that calls it.

A script is read once, registered on the client (``register_script``), and called through
``LuaScript``. Alone, a call is the registered script's own, which loads the script again
after NOSCRIPT (a Redis restart, a failover, SCRIPT FLUSH). In a pipeline it is an EVALSHA of
the same sha: redis-py's pipelines would otherwise ask SCRIPT EXISTS before every execute, a
round trip per batch on the hot path. ``settle`` reruns, through the registered script, any
pipelined call that met NOSCRIPT; it did not run, so running it now is its only run.

Names that Lua and Python share (field prefixes, key names) reach the scripts as KEYS or
ARGV, never as literals in the Lua text.

A script may be given preludes: ``.lua`` files of local functions put before its own text, so
that rules several scripts share (a job's counters, an idempotency record) are written once
and still run inside each script's one atomic call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

Args = list[str | int | float]
# A prelude: (package, name) of a ``.lua`` file put before a script's text.
Prelude = tuple[str, str]


@cache
def lua_source(package: str, name: str) -> str:
    """The text of ``<package>/lua/<name>.lua``, read once per process."""
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class PipelinedCall:
    """A script call queued in a pipeline, kept to be run again after NOSCRIPT."""

    script: LuaScript
    keys: list[str]
    args: Args


class LuaScript:
    """One script registered on one client."""

    def __init__(
        self, client: Redis, package: str, name: str, preludes: tuple[Prelude, ...] = ()
    ) -> None:
        self.name = name
        source = "".join(lua_source(*prelude) + "\n" for prelude in preludes)
        self._registered = client.register_script(source + lua_source(package, name))

    async def __call__(self, keys: list[str], args: Args) -> Any:
        """Run the script in a round trip of its own."""
        return await self._registered(keys=keys, args=args)

    def queue(self, pipeline: Pipeline, keys: list[str], args: Args) -> PipelinedCall:
        """Queue the script in a pipeline; pass what this returns to settle()."""
        pipeline.evalsha(self._registered.sha, len(keys), *keys, *args)
        return PipelinedCall(self, keys, args)


async def settle(replies: list[Any], calls: dict[int, PipelinedCall]) -> list[Any]:
    """Rerun pipelined script calls (by reply index) that met NOSCRIPT, then raise the
    pipeline's first error, if any; returns the replies with the reruns' results in place."""
    for index, call in calls.items():
        if isinstance(replies[index], NoScriptError):
            replies[index] = await call.script(call.keys, call.args)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
