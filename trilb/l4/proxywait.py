"""Reading the PROXY protocol header a connection starts with, before it is served.

Owns the wait between accept and a frontend's ``take`` on an ``accept_proxy``
frontend (TCP and HTTP alike): the bytes are peeked, not read, until a whole header is
there (l4/proxyproto.py parses it), and then exactly the header is consumed: what the
client sent after it stays in the socket for whoever serves the connection (the TLS
handshake, the HTTP parser, the relay). No task: the reactor's readiness callback and a
sweeper deadline (``accept_proxy_timeout``) drive it. A bad, missing or late header
closes the connection with nothing forwarded, logged once per interval.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from trilb.l4.idle import Deadline
from trilb.l4.proxyproto import V1_MAX, V2_MAX_EXTRA, ProxyHeaderError, parse

if TYPE_CHECKING:
    from trilb.l4.accept import Acceptor

log = logging.getLogger(__name__)

# The most a header can take: a v2 header with its largest TLV section accepted.
PEEK_SIZE = max(V1_MAX, 16 + 216 + V2_MAX_EXTRA)


class ProxyWait:
    """One accepted connection waiting for its PROXY header."""

    __slots__ = ("conn", "fd", "fe", "peer", "timer")

    def __init__(self, fe: Acceptor, conn: socket.socket, peer: tuple[str, int]) -> None:
        self.fe = fe
        self.conn = conn
        self.peer = peer
        self.fd = conn.fileno()
        self.timer: Deadline | None = None

    def start(self) -> None:
        fe = self.fe
        try:
            self.conn.setblocking(False)
        except OSError:
            self._fail("")
            return
        self.timer = fe.sweeper.watch_deadline(fe.config.accept_proxy_timeout, self._late)
        fe.reactor.watch(self.fd, self._on_event)
        self._on_event(0)  # (the header often comes with the connection)

    def _on_event(self, events: int) -> None:
        try:
            self._step()
        except Exception:
            # Called from the accept loop too: one connection's surprise must not end it.
            log.exception("frontend %s: PROXY header of %s", self.fe.config.name, self.peer[0])
            self._fail("")

    def _step(self) -> None:
        try:
            data = self.conn.recv(PEEK_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(f"closed before its PROXY header ({exc.strerror})")
            return
        if not data:
            self._fail("closed before its PROXY header")
            return
        try:
            found = parse(data)
        except ProxyHeaderError as exc:
            self._fail(str(exc))
            return
        if found is None:
            return  # more is coming: the next edge peeks again
        info, length = found
        try:
            self.conn.recv(length)  # the header only (it is all in the socket's buffer)
        except OSError as exc:
            self._fail(f"closed inside its PROXY header ({exc.strerror})")
            return
        self._stop()
        # A LOCAL or UNKNOWN header names nobody: the connection's own address stands.
        peer = (info.source[0], info.source[1]) if info.source is not None else self.peer
        self.fe.serve_from(self.conn, peer, info.destination)

    def _late(self) -> None:
        self.timer = None
        self._fail(f"no PROXY header within {self.fe.config.accept_proxy_timeout:g}s")

    def _fail(self, why: str) -> None:
        self._stop()
        self.fe.refuse(self.conn, self.peer[0], why)

    def _stop(self) -> None:
        if self.timer is not None:
            self.fe.sweeper.unwatch_deadline(self.timer)
            self.timer = None
        self.fe.reactor.unwatch(self.fd)
