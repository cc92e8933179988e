"""The clients that service.redisclient builds: commands packed in C, byte for byte as before."""

from __future__ import annotations

import pytest
import redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from harness.redis_server import RedisServer
from service.core.raw_text import original_bytes
from service.core.redis_client import create_redis, packing_in_c
from service.core.settings import Settings
from tests.support.service_settings import make_settings

NOT_UTF8 = b"\xff\xfe".decode("utf-8", "surrogateescape")
COMMANDS = [
    ("XADD", "s", "MAXLEN", "~", 10_000, "*", "type", "a.b", "data", '{"é":1}'),
    ("XINFO GROUPS", "shield:events"),
    (b"CLIENT SETNAME", b"worker"),
    ("EVALSHA", "0" * 40, 2, "k1", "k2", 1.5, -7, 2**70, b"\x00\r\n"),
    ("SET", "k", NOT_UTF8),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: str(command[0]))
def test_commands_are_packed_byte_for_byte_as_redis_py_does(command: tuple[object, ...]) -> None:
    options = {"encoding": "utf-8", "encoding_errors": "surrogateescape"}
    python = Connection(**options)  # type: ignore[arg-type]
    in_c = packing_in_c(Connection)(**options)  # type: ignore[arg-type]
    assert b"".join(in_c.pack_command(*command)) == b"".join(python.pack_command(*command))


def test_what_hiredis_cannot_pack_fails_as_before() -> None:
    in_c = packing_in_c(Connection)()
    with pytest.raises(DataError):
        in_c.pack_command("SET", "k", True)


async def test_bytes_that_are_not_utf8_reach_redis_unchanged(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings: Settings = make_settings(redis_server)
    client = create_redis(settings)
    try:
        await client.set("k", NOT_UTF8)
        assert await client.get("k") == NOT_UTF8
    finally:
        await client.aclose()
    raw = redis.Redis(port=redis_server.port)
    assert raw.get("k") == original_bytes(NOT_UTF8) == b"\xff\xfe"
    raw.close()
