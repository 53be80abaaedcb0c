"""The accept loop every frontend runs, TCP and HTTP alike: admission by maxconn.

Owns accepting from a listening socket while the frontend is under ``maxconn``
(above it the kernel queues), pausing when accept() runs out of descriptors, yielding
after a burst so a flood of connections cannot starve the rest of the worker, and the
throttled log lines for both conditions. What an accepted connection becomes is the
subclass's ``take``; it calls ``released`` when the connection is gone.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio
from trio.lowlevel import checkpoint, wait_readable

from trilb.config.schema import Frontend
from trilb.l4.idle import IdleSweeper
from trilb.l4.limits import Matcher, SourceLimits, parse_source
from trilb.l4.proxywait import ProxyWait
from trilb.l4.reactor import Reactor
from trilb.obs.counters import F_CONNECTIONS, F_REFUSED, frontend_counts
from trilb.obs.logging import Throttle

log = logging.getLogger(__name__)

# accept() failing for lack of file descriptors is retried after this pause rather
# than in a hot loop (the kernel keeps queueing meanwhile).
ACCEPT_PAUSE = 0.1
# Connections accepted in a row before the loop yields to the rest of the worker.
ACCEPT_BURST = 64
# Repeated conditions (accept failing, maxconn reached) are logged at most once per
# this many seconds per frontend, with the count of the ones not logged.
LOG_INTERVAL = 5.0
_OUT_OF = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Acceptor:
    """A frontend's admission: its accept loops and its count of open connections."""

    # Set by the subclass: what drives its connections without tasks.
    reactor: Reactor
    sweeper: IdleSweeper

    def __init__(self, config: Frontend) -> None:
        self.config = config
        self.active = 0
        # Connections accepted and refused before being served (limits, a bad PROXY
        # header...) among them: obs/counters.py, published once a tick. Refusals are
        # logged once per interval.
        self.counts = frontend_counts()
        self._refusals = Throttle(LOG_INTERVAL)
        self.limits = SourceLimits(config.limits) if config.limits is not None else None
        self.proxy_from = Matcher(config.accept_proxy_from) if config.accept_proxy_from else None
        # Set while the accept loops wait for a connection to end (at maxconn); every
        # listener of the frontend waits on the same event.
        self._room: trio.Event | None = None
        self._accept_failing = Throttle(LOG_INTERVAL)
        self._full = Throttle(LOG_INTERVAL)

    def take(
        self,
        conn: socket.socket,
        peer: tuple[str, int],
        destination: tuple[str, int] | None = None,
    ) -> None:
        """Serve one accepted connection; ``active`` has already counted it. ``peer``
        is its client, ``destination`` the address it connected to (both from a PROXY
        header when there was one; ``destination`` None: the listener's)."""
        raise NotImplementedError

    def released(self, source: str | bytes = "") -> None:
        """A connection of this frontend is gone (``source``: its client address, as
        ``take`` got it; "" for one refused before ``take``)."""
        if self.limits is not None and source:
            self.limits.release(source if isinstance(source, str) else source.decode())
        self.active -= 1
        if self._room is not None:
            self._room.set()
            self._room = None

    def admit(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Count and serve a connection (from the accept loop, or a final drain)."""
        self.active += 1
        self.counts[F_CONNECTIONS] += 1
        if self.config.accept_proxy:  # its PROXY header first: then serve
            trusted = self.proxy_from
            if trusted is not None:
                address = parse_source(peer[0])
                if address is None or address not in trusted:
                    self.refuse(conn, peer[0], "not in accept_proxy_from")
                    return
            ProxyWait(self, conn, peer).start()
            return
        if self.limits is None:
            self.take(conn, peer)
        else:
            self.serve_from(conn, peer, None)

    def serve_from(
        self, conn: socket.socket, peer: tuple[str, int], destination: tuple[str, int] | None
    ) -> None:
        """Serve a connection from ``peer`` (its PROXY header's client, if it had one)
        if the per-source limits admit it; else close it."""
        limits = self.limits
        if limits is not None:
            now = trio.current_time()
            why = limits.admit(peer[0], now)
            if why is not None:
                self.refuse(conn, peer[0], why, now)
                return
        self.take(conn, peer, destination)

    def refuse(self, conn: socket.socket, ip: str, why: str, now: float | None = None) -> None:
        """Close a connection refused before being served; count it, log it once per
        interval. What the client sent is read and dropped first: a close with unread
        data would be a reset rather than an end of stream."""
        try:
            conn.recv(65536, socket.MSG_DONTWAIT)
        except OSError:
            pass
        conn.close()
        self.released()
        self.note_refused(ip, why, trio.current_time() if now is None else now)

    def note_refused(self, ip: str, why: str, now: float) -> None:
        """Count a connection refused before being served; log it once per interval."""
        self.counts[F_REFUSED] += 1
        more = self._refusals.allow(now)
        if more is not None:
            log.warning("frontend %s: connection from %s refused: %s%s", self.config.name, ip,
                        why, f" (+{more} more since last report)" if more else "")  # fmt: skip

    async def serve(self, listener: socket.socket) -> None:
        """Accept until cancelled."""
        maxconn = self.config.maxconn
        family, kind = int(listener.family), int(listener.type)
        burst = 0
        while True:
            if self.active >= maxconn:
                self._note_full()
                if self._room is None:
                    self._room = trio.Event()
                await self._room.wait()
                continue
            try:
                # socket.accept() without its two enum conversions (family and type,
                # about 2 µs a connection on 3.11): the listener's ints, once.
                fd, peer = listener._accept()  # type: ignore[attr-defined]
                conn = socket.socket(family, kind, 0, fd)
            except BlockingIOError:
                burst = 0
                await wait_readable(listener)
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF:
                    self._note_failing(exc)
                    await trio.sleep(ACCEPT_PAUSE)
                continue  # other errors (ECONNABORTED...) concern that one connection only
            self.admit(conn, peer)
            burst += 1
            if burst >= ACCEPT_BURST:
                burst = 0
                await checkpoint()

    def accept_burst(self, listener: socket.socket, family: int, kind: int) -> str:
        """Accept what is queued, up to a burst, without waiting: the readiness
        callback's half of ``serve``, for a frontend driven by the reactor.

        Returns "more" (the burst was used up: call again after the rest of the worker
        had its turn), "empty" (the queue is empty), "full" (at maxconn: call again once
        ``released`` made room) or "failing" (out of descriptors: call again after
        ACCEPT_PAUSE).
        """
        maxconn = self.config.maxconn
        for _ in range(ACCEPT_BURST):
            if self.active >= maxconn:
                self._note_full()
                return "full"
            try:
                fd, peer = listener._accept()  # type: ignore[attr-defined]
                conn = socket.socket(family, kind, 0, fd)
            except BlockingIOError:
                return "empty"
            except OSError as exc:
                if exc.errno in _OUT_OF:
                    self._note_failing(exc)
                    return "failing"
                continue  # other errors (ECONNABORTED...) concern that one connection only
            self.admit(conn, peer)
        return "more"

    def _note_full(self) -> None:
        more = self._full.allow(trio.current_time())
        if more is not None:
            log.warning("frontend %s: maxconn %d reached, new connections wait in the kernel "
                        "queue (%d more times since last report)", self.config.name,
                        self.config.maxconn, more)  # fmt: skip

    def _note_failing(self, exc: OSError) -> None:
        more = self._accept_failing.allow(trio.current_time())
        if more is not None:
            log.error("frontend %s: accept: %s (%d more since last report)",
                      self.config.name, exc.strerror, more)  # fmt: skip
