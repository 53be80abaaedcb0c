"""A ``mode = "tcp"`` frontend: accept, pick a server, connect (retrying), relay.

Owns the per-connection flow of L4 TCP and its logging. One trio task per listener
accepts; a connection has no task of its own: its connect attempts and its relay are
driven by the reactor's events and the sweeper's deadlines (a task, a nursery or a
cancel scope per connection cost more CPU than the rest of its handling; see
docs/benchmarks.md). The bytes are moved by l4/pump.py, readiness comes from
l4/reactor.py, the choice of server from balance/.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from trilb.balance.algorithms import ServerSlot
from trilb.balance.backend import BackendState, source_key
from trilb.config.schema import Frontend
from trilb.l4.accept import LOG_INTERVAL, Acceptor
from trilb.l4.connect import error_kind
from trilb.l4.idle import Deadline, IdleSweeper, Watched
from trilb.l4.proxyproto import build_v1, build_v2
from trilb.l4.reactor import Link, Reactor
from trilb.obs.accesslog import AccessLog, tcp_line
from trilb.obs.counters import F_BYTES_IN, F_BYTES_OUT, S_BYTES_IN, S_BYTES_OUT, S_TOTAL
from trilb.obs.logging import Throttle
from trilb.plugin.api import Context, Plugin
from trilb.plugin.chains import build, run_connect

log = logging.getLogger(__name__)


class TcpFrontend(Acceptor):
    """One TCP frontend inside one worker."""

    def __init__(
        self,
        config: Frontend,
        backend: BackendState,
        reactor: Reactor,
        sweeper: IdleSweeper,
        plugins: Mapping[str, Plugin] | None = None,
    ) -> None:
        super().__init__(config)
        self.backend = backend
        # The PROXY header each server connection starts with, if the backend asks.
        kind = backend.config.send_proxy
        self.send_proxy = None if not kind else build_v1 if kind == "v1" else build_v2
        # The plugins' on_connect, the one phase of an L4 connection (empty: none).
        chains = build(config.plugins, plugins or {})
        self.connect_phase = chains.connect if chains is not None else ()
        self.reactor = reactor
        self.sweeper = sweeper
        self._links: dict[Link, _Entry] = {}
        self._unserved = Throttle(LOG_INTERVAL)
        # Per-connection detail costs a clock read and a format: only when it is shown.
        self._debug = log.isEnabledFor(logging.DEBUG)
        self.access: AccessLog | None = None

    def set_access_log(self, access: AccessLog) -> None:
        """Log a line per connection (it then costs a clock read at its start)."""
        self.access = access
        self._debug = True

    def take(
        self,
        conn: socket.socket,
        peer: tuple[str, int],
        destination: tuple[str, int] | None = None,
    ) -> None:
        """Start connecting to a server; the connection has no task of its own.
        ``destination``: the address the client connected to, when a PROXY header said
        (else the listener's, if a server is sent one)."""
        try:
            if self.connect_phase:
                ctx = Context(peer[0], "tcp", self.config.name)
                if run_connect(self.connect_phase, ctx) is not None:
                    self._unserved_line(peer, "refused")
                    self._closed(conn, peer)  # refused: closed before any server is asked
                    return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _Connect(self, conn, peer, destination).next()
        except Exception:
            # One connection's surprise must not take the worker's other ones down.
            log.exception("frontend %s: connection from %s failed", self.config.name, peer[0])
            self._closed(conn, peer)

    def _relay(
        self,
        conn: socket.socket,
        peer: tuple[str, int],
        server: socket.socket,
        slot: ServerSlot,
        destination: tuple[str, int] | None,
    ) -> None:
        start = trio.current_time() if self._debug else 0.0
        self.backend.succeeded(slot)
        if self.send_proxy is not None:
            try:  # (a new socket's empty buffer takes the ~50 bytes at once)
                dest = destination or conn.getsockname()[:2]
                server.send(self.send_proxy(peer, dest))
            except OSError as exc:
                log.debug("frontend %s: server %s: PROXY header not sent: %s",
                          self.config.name, slot.name, exc.strerror)  # fmt: skip
                server.close()
                self._closed(conn, peer)
                return
        link = self.reactor.add(conn, server, self.config.splice, self._link_done)
        slot.active += 1
        slot.counts[S_TOTAL] += 1
        entry = _Entry(slot, self.sweeper.watch(link, self.config.idle_timeout), peer, start)
        self._links[link] = entry
        if link.closed:  # it ended inside reactor.add(), before it was registered here
            self._link_done(link)

    def _link_done(self, link: Link) -> None:
        entry = self._links.pop(link, None)
        if entry is None:
            return  # ended inside reactor.add(): _relay() calls us again
        slot = entry.slot
        slot.active -= 1
        t = link.traffic
        counts = slot.counts
        counts[S_BYTES_OUT] += t.up
        counts[S_BYTES_IN] += t.down
        counts = self.counts
        counts[F_BYTES_IN] += t.up
        counts[F_BYTES_OUT] += t.down
        self.sweeper.unwatch(entry.watched)
        link.server.close()
        if self._debug:
            how = "idle" if entry.watched.aborted else (t.error or "closed")
            took = trio.current_time() - entry.start
            if self.access is not None:
                client = f"{entry.peer[0]}:{entry.peer[1]}"
                end = ("idle" if entry.watched.aborted else "closed" if t.error is None
                       else errno.errorcode.get(t.error.errno or 0, "error"))  # fmt: skip
                self.access.add(tcp_line(self.config.name, client, self.backend.config.name,
                                         slot.name, t.up, t.down, took, end, time.time(),
                                         self.access.json))  # fmt: skip
            log.debug("frontend %s: %s:%d via %s: %d bytes up, %d down, %.3fs, %s",
                      self.config.name, entry.peer[0], entry.peer[1], entry.slot.name, t.up,
                      t.down, took, how)  # fmt: skip
        self._closed(link.client, entry.peer)

    def _unserved_line(self, peer: tuple[str, int], end: str) -> None:
        """The access log line of a connection closed before any server took it."""
        if self.access is not None:
            self.access.add(tcp_line(self.config.name, f"{peer[0]}:{peer[1]}",
                                     self.backend.config.name, "-", 0, 0, 0.0, end,
                                     time.time(), self.access.json))  # fmt: skip

    def _closed(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        conn.close()
        self.released(peer[0])

    def _log_unserved(self, peer: tuple[str, int], failures: list[str]) -> None:
        more = self._unserved.allow(trio.current_time())
        if more is None:
            return
        tried = ", ".join(failures) or "no server up"
        log.warning(
            "frontend %s: no server available for %s:%d, closed (%s)%s",
            self.config.name, peer[0], peer[1], tried,
            f" (+{more} more since last report)" if more else "",
        )  # fmt: skip


class _Connect:
    """One client's way to a server: try the balancer's picks in turn, without a task.

    Each attempt is a non-blocking connect watched by the reactor (its first event
    says how it ended) and by the sweeper (connect_timeout); a failure moves on to
    the next pick, the last one closes the client and logs why.
    """

    __slots__ = ("attempts", "conn", "destination", "failures", "fe", "peer", "slot", "sock",
                 "timer")  # fmt: skip

    def __init__(
        self,
        fe: TcpFrontend,
        conn: socket.socket,
        peer: tuple[str, int],
        destination: tuple[str, int] | None,
    ) -> None:
        self.fe = fe
        self.conn = conn
        self.peer = peer
        self.destination = destination
        backend = fe.backend
        key = source_key(peer[0]) if backend.hashes_source else None
        self.attempts = backend.attempts(key)
        self.failures: list[str] = []
        self.sock: socket.socket | None = None
        self.slot: ServerSlot | None = None
        self.timer: Deadline | None = None

    def next(self) -> None:
        fe = self.fe
        for slot in self.attempts:
            address = slot.address
            if address is None:  # (a dns: slot emptied since the pick)
                continue
            try:
                sock = socket.socket(address.family, socket.SOCK_STREAM)
            except OSError as exc:
                # Out of descriptors or memory: another server would not do better.
                self.failures.append(f"{slot.name} local: {exc.strerror}")
                break
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address.sockaddr)
            if code == 0:
                fe._relay(self.conn, self.peer, sock, slot, self.destination)
                return
            if code == errno.EINPROGRESS:
                self.sock, self.slot = sock, slot
                fe.reactor.connecting(sock, self._on_event)
                self.timer = fe.sweeper.watch_deadline(
                    fe.backend.config.connect_timeout, self._on_timeout
                )
                return
            sock.close()
            self._failed(slot, code)
        fe._log_unserved(self.peer, self.failures)
        fe._unserved_line(self.peer, "no_server")
        fe._closed(self.conn, self.peer)

    def _on_event(self, events: int) -> None:
        sock, slot = self.sock, self.slot
        assert sock is not None and slot is not None
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0 and not events & select.EPOLLOUT:
            return  # not finished yet
        self._end_attempt(sock)
        if code == 0:
            self.fe._relay(self.conn, self.peer, sock, slot, self.destination)
            return
        sock.close()
        self._failed(slot, code)
        self.next()

    def _on_timeout(self) -> None:
        sock, slot = self.sock, self.slot
        assert sock is not None and slot is not None
        self.timer = None
        self._end_attempt(sock)
        sock.close()
        self.failures.append(f"{slot.name} timeout")
        self.fe.backend.failed(slot, trio.current_time(), "connect timeout")
        log.debug("frontend %s: server %s: no answer within %gs", self.fe.config.name,
                  slot.name, self.fe.backend.config.connect_timeout)  # fmt: skip
        self.next()

    def _end_attempt(self, sock: socket.socket) -> None:
        self.fe.reactor.forget(sock)
        if self.timer is not None:
            self.fe.sweeper.unwatch_deadline(self.timer)
            self.timer = None
        self.sock = self.slot = None

    def _failed(self, slot: ServerSlot, code: int) -> None:
        kind = error_kind(code)
        self.failures.append(f"{slot.name} {kind}")
        log.debug("frontend %s: server %s: %s", self.fe.config.name, slot.name, kind)
        self.fe.backend.failed(slot, trio.current_time(), kind)


@dataclass(slots=True)
class _Entry:
    """What the frontend keeps about a relayed connection until it ends."""

    slot: ServerSlot
    watched: Watched
    peer: tuple[str, int]
    start: float
