"""Host names as a Host header or an Origin's authority spells them: host, or host:port."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})


def split_authority(authority: str) -> tuple[str, int | None] | None:
    """(lower-case host, port or None) of ``host[:port]``, or None when it is not one."""
    try:
        parts = urlsplit(f"//{authority}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query:
        return None
    return parts.hostname.lower(), port


def normalize_server_name(name: str) -> str:
    """``host`` or ``host:port`` in lower case; ValueError when it is neither."""
    address = split_authority(name.strip())
    if address is None:
        raise ValueError(f"{name!r} is not host or host:port")
    host, port = address
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses: names no DNS answer can give a page."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
