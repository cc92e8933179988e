"""Redis ACL rules for the service's two users: the API processes and the workers.

Each user gets only the commands the code sends (the Lua scripts' own calls included, since
Redis checks those against the caller's rules too) and only the keys of the streams it was
configured with. Commands are named one by one, never by category: a category such as
@stream or @hash grows with every Redis release, and @write would allow DEL of any key in
the patterns' reach. No user gets a pub/sub channel, @admin, @dangerous, KEYS, SCAN, FLUSH*,
CONFIG or DEBUG.

The rules are pure data, so infra (which creates the users with ACL SETUSER) and the tests
(which prove them on a real redis-server) use the same text. A password is given as its
SHA-256 (`#<hex>`), so the rule text never holds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from service.core import names

API_USER = "shield-api"
WORKER_USER = "shield-worker"

# What a client sends on connecting (AUTH, SELECT for a db; service.core.redis_client turns
# off redis-py's CLIENT SETINFO, which Redis 7.0 does not know), the health probe's PING, the
# clock and WAIT, transactions (MULTI/EXEC only wrap what the rest allows), and the Lua
# scripts' loading and calls.
CONNECTION_COMMANDS = (
    "auth",
    "hello",
    "select",
    "ping",
    "time",
    "wait",
    "multi",
    "exec",
    "discard",
    "evalsha",
    "script|load",
    "script|exists",
)
# The task queue: admit, read and settle tasks, retries, dead letters, the rate limit.
QUEUE_COMMANDS = (
    "xadd",
    "xreadgroup",
    "xack",
    "xautoclaim",
    "xclaim",
    "xpending",
    "xrange",
    "xrevrange",
    "xlen",
    "xdel",
    "xtrim",
    "xinfo|stream",
    "xinfo|groups",
    "xgroup|create",
    "exists",
    "hget",
    "hmget",
    "hset",
    "hsetnx",
    "hdel",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "pexpire",
    "zadd",
    "zcard",
    "zrange",
    "zrangebyscore",
    "zrem",
    # The jobs API: job records' expiry, and the set of jobs being cancelled that workers
    # check.
    "expire",
    "persist",
    "sadd",
    "srem",
    "smismember",
)
# The API's own: the event readers (fan-out hub, front-end and metrics-collector groups), the
# stats and health reads, and (the jobs API) the job list by creation time.
API_COMMANDS = ("xread", "xgroup|setid", "xinfo|consumers", "zrevrangebyscore")
# Plain string keys: the AG-UI thread records (which job a thread shows) and the
# Idempotency-Key records (idempotency.lua): a selector, so SET, GET and DEL reach those keys
# and nothing else, not even a stream.
STRING_KEY_COMMANDS = ("set", "get", "del")


# service.agui.run_store's key prefixes, kept here too so core does not import agui; a test
# checks that they agree.
AGUI_RUN_PREFIX = "shield:agui:run:"
AGUI_THREAD_PREFIX = "shield:agui:thread:"


@dataclass(frozen=True)
class StreamNames:
    """The streams a deployment uses (SHIELD_STREAM_INGESTION, SHIELD_STREAM_EVENTS)."""

    ingestion: str = names.INGESTION_STREAM
    events: str = names.EVENTS_STREAM


def _escape(key: str) -> str:
    """A key as an ACL glob that matches only itself: glob characters escaped."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in key)


def worker_key_patterns(streams: StreamNames) -> tuple[str, ...]:
    """The task stream and its companions (dead letters, delayed tasks, counters, rate),
    and the events stream the worker publishes to."""
    ingestion = _escape(streams.ingestion)
    return (ingestion, ingestion + ":*", _escape(streams.events))


def api_key_patterns(streams: StreamNames) -> tuple[str, ...]:
    """The worker's keys, the events stream's, what the metrics collector keeps, and the
    AG-UI run records."""
    events = _escape(streams.events)
    return (
        *worker_key_patterns(streams),
        events + ":*",
        _escape(names.COLLECTED_PREFIX) + "*",
        _escape(AGUI_RUN_PREFIX) + "*",
        # The admitting scripts (EVALSHA) are given the Idempotency-Key record as a key.
        _escape(names.IDEMPOTENCY_PREFIX) + "*",
    )


def password_rule(password: str) -> str:
    """The password as an ACL rule: its SHA-256, never the text."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def user_rules(commands: Sequence[str], key_patterns: Sequence[str]) -> list[str]:
    """The rules after the user's name and password: enabled, no channels, only these
    commands on only these keys."""
    return [
        "on",
        "resetkeys",
        "resetchannels",
        "-@all",
        *(f"+{command}" for command in commands),
        *(f"~{pattern}" for pattern in key_patterns),
    ]


def api_rules(streams: StreamNames) -> list[str]:
    """What the API processes may do: the rules, then the string keys' selector."""
    selector = " ".join(
        (
            *(f"+{command}" for command in STRING_KEY_COMMANDS),
            f"~{_escape(AGUI_THREAD_PREFIX)}*",
            f"~{_escape(names.IDEMPOTENCY_PREFIX)}*",
        )
    )
    return [
        *user_rules(
            (*CONNECTION_COMMANDS, *QUEUE_COMMANDS, *API_COMMANDS), api_key_patterns(streams)
        ),
        f"({selector})",
    ]


def worker_rules(streams: StreamNames) -> list[str]:
    """What the worker processes may do."""
    return user_rules((*CONNECTION_COMMANDS, *QUEUE_COMMANDS), worker_key_patterns(streams))


def setuser_arguments(user: str, rules: Sequence[str], password: str) -> list[str]:
    """ACL SETUSER's arguments that replace the user whole: reset first, so a rule dropped
    from the builder is dropped from Redis too."""
    return ["ACL", "SETUSER", user, "reset", password_rule(password), *rules]
