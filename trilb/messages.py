"""HTTP message heads as trilb passes them between parser, plugins, router and proxy.

Owns the value types: Headers (ordered, names lowercased bytes) and the request and
response heads with their body framing. It does not parse or serialize wire bytes
(l7/http1.py does) and holds no bodies (they stream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


class Framing:
    """How the body of a message is delimited on the wire (RFC 9112 section 6).

    Four singletons, compared with ``is``: NONE (no body: a GET without length, a HEAD
    response, 1xx/204/304), LENGTH (Content-Length bytes), CHUNKED (Transfer-Encoding:
    chunked), CLOSE (a response read until the server closes, HTTP/1.0 style).

    Not an enum.Enum: on Python 3.11 every lookup of an Enum member goes through
    EnumType.__getattr__ (about 180 ns), and the per-request path makes a dozen.
    """

    __slots__ = ("name", "value")
    NONE: ClassVar[Framing]
    LENGTH: ClassVar[Framing]
    CHUNKED: ClassVar[Framing]
    CLOSE: ClassVar[Framing]

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = name.lower()  # as logs and test corpora spell it

    def __repr__(self) -> str:
        return f"Framing.{self.name}"


Framing.NONE = Framing("NONE")
Framing.LENGTH = Framing("LENGTH")
Framing.CHUNKED = Framing("CHUNKED")
Framing.CLOSE = Framing("CLOSE")


class Headers:
    """An ordered multi-map of header fields; names are lowercased bytes.

    Kept as a plain list of pairs: heads have a few dozen fields at most, so a scan
    beats building a dict per message, and the order is preserved for forwarding.
    ``deferred`` makes one whose list is built on first use: a response forwarded as
    received never needs its fields one by one.
    """

    __slots__ = ("_items", "_load")

    def __init__(self, items: list[tuple[bytes, bytes]] | None = None) -> None:
        self._items: list[tuple[bytes, bytes]] | None = items if items is not None else []
        self._load: Callable[[], list[tuple[bytes, bytes]]] | None = None

    @classmethod
    def deferred(cls, load: Callable[[], list[tuple[bytes, bytes]]]) -> Headers:
        headers = cls.__new__(cls)
        headers._items = None
        headers._load = load
        return headers

    @property
    def items(self) -> list[tuple[bytes, bytes]]:
        items = self._items
        if items is None:
            assert self._load is not None
            items = self._items = self._load()
            self._load = None
        return items

    @items.setter
    def items(self, items: list[tuple[bytes, bytes]]) -> None:
        self._items = items
        self._load = None

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: bytes) -> bool:
        return any(n == name for n, _ in self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and other.items == self.items

    def __repr__(self) -> str:
        return f"Headers({self.items!r})"

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of ``name`` (lowercase), or ``default``."""
        for n, v in self.items:
            if n == name:
                return v
        return default

    def get_all(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.items if n == name]

    def add(self, name: bytes, value: bytes) -> None:
        self.items.append((name, value))

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every ``name`` field with one, at the first one's place (else at the end)."""
        out: list[tuple[bytes, bytes]] = []
        placed = False
        for n, v in self.items:
            if n == name:
                if not placed:
                    out.append((name, value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((name, value))
        self.items = out

    def remove(self, name: bytes) -> int:
        """Drop every ``name`` field; returns how many there were."""
        before = len(self.items)
        self.items = [(n, v) for n, v in self.items if n != name]
        return before - len(self.items)


@dataclass(slots=True)
class RequestHead:
    """A request line and its header fields, with the framing the parser decided."""

    method: bytes
    target: bytes
    version: bytes = b"1.1"
    headers: Headers = field(default_factory=Headers)
    framing: Framing = Framing.NONE
    content_length: int | None = None
    keep_alive: bool = True
    expect_continue: bool = False
    # The upgrade token (b"websocket"), when the request asks for one.
    upgrade: bytes | None = None
    # The head as received (request line and fields, each line ending CRLF, no final
    # empty line, any Connection field taken out) when it can be forwarded with only the
    # forwarding fields appended: HTTP/1.1, no hop-by-hop, forwarding or Expect field but
    # one Connection: keep-alive or close. Empty otherwise. Whoever changes the method,
    # target or headers must empty it.
    raw: bytes = field(default=b"", compare=False, repr=False)
    # The request's plugin state (l7/phases.Run) once its frontend's plugins took it.
    plugins: Any = field(default=None, compare=False, repr=False)

    @property
    def host(self) -> bytes | None:
        return self.headers.get(b"host")


@dataclass(slots=True)
class ResponseHead:
    """A status line and its header fields, with the framing the parser decided."""

    status: int
    reason: bytes = b""
    version: bytes = b"1.1"
    headers: Headers = field(default_factory=Headers)
    framing: Framing = Framing.NONE
    content_length: int | None = None
    keep_alive: bool = True
    # The head as received (status line and fields, each line ending CRLF, no final
    # empty line, a Connection field taken out unless it is ``keep_alive_line``) when it
    # can be forwarded as it is: HTTP/1.1, and no hop-by-hop field but one Connection:
    # keep-alive or close. Empty otherwise. Whoever changes the status, reason or
    # headers must empty it.
    raw: bytes = field(default=b"", compare=False, repr=False)
    # ``raw`` still holds the backend's "Connection: keep-alive": true of the next hop
    # too whenever it stays open, so it is cut only from a response that closes (the
    # common response is then forwarded without a copy).
    keep_alive_line: bool = field(default=False, compare=False, repr=False)
