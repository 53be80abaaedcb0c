"""A ``mode = "tcp"`` frontend: accept, pick a server, connect (retrying), relay.

Owns the per-connection flow of L4 TCP and its logging. The bytes are moved by
l4/pump.py, the connect edge is l4/connect.py, the choice of server is balance/.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio
from trio.lowlevel import wait_readable

from trilb.balance.algorithms import ServerSlot
from trilb.balance.backend import BackendState
from trilb.config.schema import Frontend
from trilb.errors import UpstreamError
from trilb.l4.connect import open_tcp
from trilb.l4.idle import IdleSweeper, Watched
from trilb.l4.reactor import Link, Reactor

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
        self._links: dict[Link, tuple[ServerSlot, Watched]] = {}
        self.active = 0
        # Set while the accept loop waits for a connection to end (at maxconn).
        self._room: trio.Event | None = None
        self._unserved = 0
        self._unserved_logged_at = -LOG_INTERVAL

    async def serve(self, listener: socket.socket, handlers: trio.Nursery) -> None:
        """Accept until cancelled; each connection's tasks run in ``handlers``."""
        maxconn = self.config.maxconn
        while True:
            if self.active >= maxconn:
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
                    log.error("frontend %s: accept: %s", self.config.name, exc.strerror)
                    await trio.sleep(ACCEPT_PAUSE)
                continue  # other errors (ECONNABORTED...) concern that one connection only
            self.active += 1
            handlers.start_soon(self.handle, conn, peer, handlers)

    async def handle(
        self, conn: socket.socket, peer: tuple[str, int], handlers: trio.Nursery
    ) -> None:
        """Connect to a server and relay; the reverse direction runs in ``handlers``."""
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            picked = await self._connect(peer)
        except BaseException:
            self._closed(conn)
            raise
        if picked is None:
            self._closed(conn)
            return
        server, slot = picked
        slot.active += 1
        link = self.reactor.add(conn, server, self.config.splice, self._link_done)
        if not link.closed:
            self._links[link] = (slot, self.sweeper.watch(link, self.config.idle_timeout))
        else:
            slot.active -= 1
            server.close()
            self._closed(conn)

    def _link_done(self, link: Link) -> None:
        entry = self._links.pop(link, None)
        if entry is None:
            return  # ended inside reactor.add(): handle() cleans up
        slot, watched = entry
        slot.active -= 1
        self.sweeper.unwatch(watched)
        link.server.close()
        if watched.aborted:
            log.debug("frontend %s: connection idle, closed", self.config.name)
        elif link.traffic.error is not None:
            log.debug("frontend %s: connection aborted: %s", self.config.name, link.traffic.error)
        self._closed(link.client)

    def _closed(self, conn: socket.socket) -> None:
        conn.close()
        self.active -= 1
        if self._room is not None:
            self._room.set()
            self._room = None

    async def _connect(self, peer: tuple[str, int]) -> tuple[socket.socket, ServerSlot] | None:
        backend = self.backend
        timeout = backend.config.connect_timeout
        failures = []
        key = socket.inet_pton(_family(peer[0]), peer[0]) if backend.hashes_source else None
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
        self._unserved += 1
        now = trio.current_time()
        if now - self._unserved_logged_at < LOG_INTERVAL:
            return
        tried = ", ".join(failures) or "no server up"
        more = f" (+{self._unserved - 1} more since last report)" if self._unserved > 1 else ""
        log.warning(
            "frontend %s: no server available for %s:%d, closed (%s)%s",
            self.config.name, peer[0], peer[1], tried, more,
        )  # fmt: skip
        self._unserved = 0
        self._unserved_logged_at = now


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
