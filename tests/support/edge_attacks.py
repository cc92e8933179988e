"""Hostile clients of the TLS front: connections that trickle their request header, and one
that sends a header of many MiB. Each reports when the server gave up on it."""

from __future__ import annotations

import asyncio
import resource
import ssl
import time
from dataclasses import dataclass, field


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards wanted (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Trickle:
    """What the trickling connections saw: how many opened, and how long each stayed open."""

    opened: int = 0
    failed: list[str] = field(default_factory=list)
    # Seconds from a connection's open until the server closed it.
    lifetimes_s: list[float] = field(default_factory=list)


async def _trickle_one(
    host: str,
    port: int,
    source: str,
    context: ssl.SSLContext,
    interval_s: float,
    give_up_s: float,
    result: Trickle,
    opening: asyncio.Semaphore,
) -> None:
    try:
        # A bounded number of handshakes at once, so this side's CPU keeps up.
        async with opening:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, local_addr=(source, 0)), 30
            )
    except (OSError, ssl.SSLError, TimeoutError) as error:
        result.failed.append(repr(error))
        return
    opened = time.monotonic()
    result.opened += 1
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}\r\n".encode())
        line = 0
        while time.monotonic() - opened < give_up_s:
            try:
                if await asyncio.wait_for(reader.read(1024), interval_s) == b"":
                    break
            except TimeoutError:
                line += 1
                writer.write(f"X-Trickle-{line}: {line}\r\n".encode())
                await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    result.lifetimes_s.append(time.monotonic() - opened)
    writer.close()


async def trickle_headers(
    host: str,
    port: int,
    source: str,
    count: int,
    context: ssl.SSLContext,
    interval_s: float = 4.0,
    give_up_s: float = 60.0,
) -> Trickle:
    """count TLS connections from source, each sending one header line every interval_s and
    never the end of the header; returns once the server closed each (or give_up_s passed)."""
    result = Trickle()
    opening = asyncio.Semaphore(50)
    await asyncio.gather(
        *(
            _trickle_one(host, port, source, context, interval_s, give_up_s, result, opening)
            for _ in range(count)
        )
    )
    return result


@dataclass
class HugeHeader:
    sent_bytes: int
    answer: bytes
    elapsed_s: float


async def huge_header(
    host: str, port: int, source: str, size_bytes: int, context: ssl.SSLContext
) -> HugeHeader:
    """One connection that sends a header line of size_bytes; what it sent before the server
    stopped it, and what the server answered."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port, ssl=context, local_addr=(source, 0))
    writer.write(f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Huge: ".encode())
    sent = 0
    chunk = b"a" * 65536
    try:
        while sent < size_bytes:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 20)
            sent += len(chunk)
        writer.write(b"\r\n\r\n")
        await writer.drain()
    except (OSError, ssl.SSLError, TimeoutError):
        pass
    answer = b""
    try:
        answer = await asyncio.wait_for(reader.read(4096), 10)
    except (OSError, ssl.SSLError, TimeoutError):
        pass
    writer.close()
    return HugeHeader(sent, answer, time.monotonic() - began)
