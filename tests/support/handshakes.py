"""A WebSocket handshake by hand, so a test chooses the Host and Origin a browser would send."""

from __future__ import annotations

import base64
import os
import socket
from urllib.parse import urlsplit


def websocket_handshake_status(base_url: str, path: str, host: str, origin: str | None) -> int:
    """The status of an upgrade request to the API with this Host and Origin (101 accepted)."""
    address = urlsplit(base_url)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while b"\r\n" not in received:
            chunk = connection.recv(4096)
            if not chunk:
                break
            received += chunk
    return int(received.split(b" ", 2)[1])
