"""The least a WebSocket client must do (bench, replay tests): a handshake, and reading frames.

The SSE bench client reads raw chunks and searches them with a regex; a WebSocket client
built on a full library (handshake checks, UTF-8 validation, a message queue, a task per
connection, permessage-deflate offered and so accepted) costs the client process far more
per event, and the bench then measures the client. This one does the same work per byte as
the SSE client: split frames out of raw chunks, answer pings, hand back text payloads.
It offers no extension, so the server sends plain frames, as it sends SSE.
"""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass, field

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def handshake_request(host: str, path: str) -> bytes:
    """The HTTP/1.1 upgrade request of RFC 6455, with a fresh key and no extensions."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final frame from client to server, masked as RFC 6455 requires (payload < 126)."""
    if len(payload) > 125:
        raise ValueError("control payloads are at most 125 bytes")
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


@dataclass
class FrameReader:
    """Splits a server's unmasked frames out of raw chunks; reassembles fragmented messages."""

    buffer: bytearray = field(default_factory=bytearray)
    fragments: list[bytes] = field(default_factory=list)
    fragmented_opcode: int = OP_TEXT

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """(opcode, payload) of every complete message or control frame in the data so far."""
        self.buffer += chunk
        messages: list[tuple[int, bytes]] = []
        offset = 0
        buffer = self.buffer
        while len(buffer) - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset + 2)
                header = 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset + 2)
                header = 10
            if second & 0x80:
                raise ValueError("a server must not mask its frames")
            end = offset + header + length
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + header : end])
            offset = end
            opcode, final = first & 0x0F, bool(first & 0x80)
            if opcode >= OP_CLOSE:
                messages.append((opcode, payload))
            elif not final:
                if opcode != OP_CONTINUATION:
                    self.fragmented_opcode = opcode
                self.fragments.append(payload)
            elif opcode == OP_CONTINUATION:
                messages.append((self.fragmented_opcode, b"".join([*self.fragments, payload])))
                self.fragments.clear()
            else:
                messages.append((opcode, payload))
        del buffer[:offset]
        return messages
