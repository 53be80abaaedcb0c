"""A ``mode = "tcp"`` frontend: accept, pick a server, connect (retrying), relay.

Owns the per-connection flow of L4 TCP and its logging. The bytes are moved by
l4/pump.py, the connect edge is l4/connect.py, the choice of server is balance/.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass

import trio
from trio.lowlevel import wait_readable

from trilb.balance.algorithms import ServerSlot
from trilb.balance.backend import BackendState
from trilb.config.schema import Frontend
from trilb.errors import UpstreamError
from trilb.l4.connect import open_tcp
from trilb.l4.idle import IdleSweeper, Watched
from trilb.l4.reactor import Link, Reactor
from trilb.obs.logging import Throttle

log = logging.getLogger(__name__)

# accept() failing for lack of file descriptors is retried after this pause rather
# than in a hot loop (the kernel keeps queueing meanwhile).
ACCEPT_PAUSE = 0.1
# "no server available" is logged at most once per this many seconds per frontend,
# with the count of the ones not logged.
LOG_INTERVAL = 5.0


class TcpFrontend:
    """One TCP frontend inside one worker."""

    def __init__(
        self, config: Frontend, backend: BackendState, reactor: Reactor, sweeper: IdleSweeper
    ) -> None:
        self.config = config
        self.backend = backend
        self.reactor = reactor
        self.sweeper = sweeper
        self._links: dict[Link, _Entry] = {}
        self.active = 0
        # Set while the accept loop waits for a connection to end (at maxconn).
        self._room: trio.Event | None = None
        self._unserved = Throttle(LOG_INTERVAL)
        self._accept_failing = Throttle(LOG_INTERVAL)
        self._full = Throttle(LOG_INTERVAL)
        # Per-connection detail costs a clock read and a format: only when it is shown.
        self._debug = log.isEnabledFor(logging.DEBUG)

    async def serve(self, listener: socket.socket, handlers: trio.Nursery) -> None:
        """Accept until cancelled; each connection's task runs in ``handlers``."""
        maxconn = self.config.maxconn
        while True:
            if self.active >= maxconn:
                self._note_full()
                # Not accepting leaves new connections in the kernel's queue. Every
                # listener of the frontend waits on the same event.
                if self._room is None:
                    self._room = trio.Event()
                await self._room.wait()
                continue
            try:
                conn, peer = listener.accept()
            except BlockingIOError:
                await wait_readable(listener)
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    more = self._accept_failing.allow(trio.current_time())
                    if more is not None:
                        log.error("frontend %s: accept: %s (%d more since last report)",
                                  self.config.name, exc.strerror, more)  # fmt: skip
                    await trio.sleep(ACCEPT_PAUSE)
                continue  # other errors (ECONNABORTED...) concern that one connection only
            self.active += 1
            handlers.start_soon(self.handle, conn, peer)

    async def handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Connect to a server, then hand both sockets to the reactor."""
        picked = None
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            picked = await self._connect(peer)
            if picked is not None:
                self._relay(conn, peer, *picked)
                return
        except Exception:
            # One connection's surprise must not take the worker's other ones down.
            log.exception("frontend %s: connection from %s failed", self.config.name, peer[0])
            if picked is not None:
                picked[0].close()
        except BaseException:
            if picked is not None:
                picked[0].close()
            self._closed(conn)
            raise
        self._closed(conn)

    def _relay(
        self, conn: socket.socket, peer: tuple[str, int], server: socket.socket, slot: ServerSlot
    ) -> None:
        start = trio.current_time() if self._debug else 0.0
        link = self.reactor.add(conn, server, self.config.splice, self._link_done)
        slot.active += 1
        entry = _Entry(slot, self.sweeper.watch(link, self.config.idle_timeout), peer, start)
        self._links[link] = entry
        if link.closed:  # it ended inside reactor.add(), before it was registered here
            self._link_done(link)

    def _link_done(self, link: Link) -> None:
        entry = self._links.pop(link, None)
        if entry is None:
            return  # ended inside reactor.add(): _relay() calls us again
        entry.slot.active -= 1
        self.sweeper.unwatch(entry.watched)
        link.server.close()
        if self._debug:
            t = link.traffic
            how = "idle" if entry.watched.aborted else (t.error or "closed")
            log.debug("frontend %s: %s:%d via %s: %d bytes up, %d down, %.3fs, %s",
                      self.config.name, entry.peer[0], entry.peer[1], entry.slot.name, t.up,
                      t.down, trio.current_time() - entry.start, how)  # fmt: skip
        self._closed(link.client)

    def _closed(self, conn: socket.socket) -> None:
        conn.close()
        self.active -= 1
        if self._room is not None:
            self._room.set()
            self._room = None

    def _note_full(self) -> None:
        more = self._full.allow(trio.current_time())
        if more is not None:
            log.warning("frontend %s: maxconn %d reached, new connections wait in the kernel "
                        "queue (%d more times since last report)", self.config.name,
                        self.config.maxconn, more)  # fmt: skip

    async def _connect(self, peer: tuple[str, int]) -> tuple[socket.socket, ServerSlot] | None:
        backend = self.backend
        timeout = backend.config.connect_timeout
        failures = []
        key = _address_key(peer[0]) if backend.hashes_source else None
        for slot in backend.attempts(key):
            address = backend.config.servers[slot.index].address
            try:
                sock = await open_tcp(address, timeout, self.sweeper)
            except UpstreamError as exc:
                failures.append(f"{slot.name} {exc.kind}")
                log.debug("frontend %s: server %s: %s", self.config.name, slot.name, exc)
                if not exc.retryable:
                    break
                continue
            return sock, slot
        self._log_unserved(peer, failures)
        return None

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


@dataclass(slots=True)
class _Entry:
    """What the frontend keeps about a relayed connection until it ends."""

    slot: ServerSlot
    watched: Watched
    peer: tuple[str, int]
    start: float


def _address_key(host: str) -> bytes:
    """The packed client address, the key of source hashing (a scope id is dropped)."""
    host = host.partition("%")[0]
    return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
