"""WebSocket frames as the raw relay sees them (RFC 6455 section 5), sans I/O.

The raw relay moves bytes without decoding them, but trilb must still speak on a
relayed connection now and then: a Close 1001 when it shuts down, a Ping to a silent
client. A frame may only go between two others, never inside one, so each direction
has a FrameWalker that follows frame boundaries from the frame headers alone: a few
integer operations per header, nothing per payload byte, and a whole read skipped
when it falls inside a payload (bulk transfers). It also notes a Close frame passing.
The frames trilb writes itself are built here too.
"""

from __future__ import annotations

import os

# Status codes of RFC 6455 7.4.1 that trilb sends.
GOING_AWAY = 1001
TOO_BIG = 1009
CLOSE = 0x8
PING = 0x9


class FrameWalker:
    """Follows frame boundaries in one direction of a WebSocket connection."""

    __slots__ = ("head", "left", "saw_close")

    def __init__(self) -> None:
        # Payload bytes of the current frame still to come (0: at a boundary, unless a
        # header is incomplete).
        self.left = 0
        # The start of a frame header that a read cut short.
        self.head = b""
        # A Close frame has begun in this direction: its sender will send nothing more.
        self.saw_close = False

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes fed so far end exactly between two frames."""
        return not self.left and not self.head

    def feed(self, data: bytes | memoryview) -> None:
        """Follow ``data``, the next bytes of the direction."""
        n = len(data)
        left = self.left
        if left >= n:  # inside one payload: nothing to look at
            self.left = left - n
            return
        if self.head:
            data = self.head + bytes(data)
            n = len(data)
            self.head = b""
        pos = left
        while pos < n:
            if n - pos < 2:
                self.head = bytes(data[pos:])
                self.left = 0
                return
            if data[pos] & 0x0F == CLOSE:
                self.saw_close = True
            b1 = data[pos + 1]
            length = b1 & 0x7F
            size = 6 if b1 & 0x80 else 2  # a masked frame carries its 4-byte key
            if length >= 126:
                extra = 2 if length == 126 else 8
                if n - pos < 2 + extra:
                    self.head = bytes(data[pos:])
                    self.left = 0
                    return
                length = int.from_bytes(data[pos + 2 : pos + 2 + extra], "big")
                size += extra
            pos += size + length
        self.left = pos - n


def frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """A whole frame (FIN set); ``masked``: it goes to a server, which RFC 6455 5.3
    requires of every frame a client sends. Control payloads only (< 126 bytes)."""
    if not masked:
        return bytes((0x80 | opcode, len(payload))) + payload
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


def close_frame(code: int, masked: bool, reason: bytes = b"") -> bytes:
    """A Close frame with ``code``."""
    return frame(CLOSE, code.to_bytes(2, "big") + reason, masked)
