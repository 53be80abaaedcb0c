"""A ``mode = "http"`` frontend: accept, then serve each client connection's requests.

Owns the frontend's connections: each accepted socket becomes a ClientConnection
(l7/client.py), driven by the worker's reactor, and the exchanges a connection hands
over run here as tasks of the worker's handler nursery, where exceptions become the
error statuses (400-class from the parser, 502/503/504 from l7/proxy.py, 408 for a
slow client, 500 for a bug). Also the drain: idle keep-alive connections close at
once, busy ones after their response. It does not parse, route or talk to backends.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Mapping

import trio

from trilb.config.schema import Frontend
from trilb.errors import (
    ClientClosed,
    ClientTimeout,
    ExchangeAborted,
    ProtocolError,
    UpstreamError,
)
from trilb.l4.accept import ACCEPT_PAUSE, Acceptor
from trilb.l4.idle import IdleSweeper
from trilb.l4.reactor import Reactor
from trilb.l7.client import CLOSED, IDLE, TASK, ClientConnection
from trilb.l7.phases import PluginReply, reply_wire
from trilb.l7.proxy import HttpBackend, Proxy, status_for
from trilb.l7.wsrelay import Tunnels
from trilb.obs.accesslog import AccessLog
from trilb.plugin.api import Plugin
from trilb.tls import ServerTls

log = logging.getLogger(__name__)


class HttpFrontend(Acceptor):
    """One http frontend inside one worker."""

    def __init__(
        self,
        config: Frontend,
        backends: dict[str, HttpBackend],
        sweeper: IdleSweeper,
        reactor: Reactor,
        tls: ServerTls | None = None,
        plugins: Mapping[str, Plugin] | None = None,
    ) -> None:
        super().__init__(config)
        self.sweeper = sweeper
        self.reactor = reactor
        # TLS termination: connections are wrapped and their handshake driven first.
        self.tls = tls
        self.proxy = Proxy(config, backends, plugins)
        self.proxy.counts = self.counts
        self.tunnels = Tunnels()
        # The nursery exchanges handed over by connections run in (the worker's).
        self.handlers: trio.Nursery | None = None
        self.conns: set[ClientConnection] = set()
        self.draining = False
        self._listeners: list[socket.socket] = []
        # Listeners not watched for now (maxconn reached, or out of descriptors).
        self._paused: list[socket.socket] = []

    def set_access_log(self, access: AccessLog) -> None:
        self.proxy.set_access_log(access)

    def drain(self) -> None:
        """Stop keeping connections alive: idle ones close now, busy ones after their
        current response (which says ``Connection: close``). WebSockets go on until
        ``close_websockets``, near the grace deadline."""
        self.draining = self.proxy.draining = True
        for conn in list(self.conns):
            if conn.state == IDLE:
                conn.drain()  # (a request already received is answered first)
            elif conn.h2 is not None:
                conn.h2.drain()  # GOAWAY: its streams in flight finish

    def close_websockets(self) -> None:
        """Close 1001 to every WebSocket (and to any opened from now on)."""
        self.tunnels.drain()

    def close_all(self) -> None:
        """The grace period is over: close what the reactor still serves (tasks end
        with the handler nursery's cancellation)."""
        for conn in list(self.conns):
            if conn.state != TASK:
                conn.close()

    def listen(self, listener: socket.socket) -> None:
        """Accept from ``listener`` in the reactor's callbacks (no trio task wake-up per
        batch of connections); ``stop_listening`` ends it.

        TCP_NODELAY is set on the listener: Linux copies it to every accepted socket,
        which saves a setsockopt per connection (responses go out in one send).
        """
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._listeners.append(listener)
        self._watch(listener)

    def stop_listening(self) -> None:
        for listener in self._listeners:
            self.reactor.unwatch(listener.fileno())
        self._listeners.clear()
        self._paused.clear()

    def _watch(self, listener: socket.socket) -> None:
        family, kind = int(listener.family), int(listener.type)
        self.reactor.watch(
            listener.fileno(), lambda _: self._accept(listener, family, kind), edge=False
        )

    def _accept(self, listener: socket.socket, family: int, kind: int) -> None:
        why = self.accept_burst(listener, family, kind)
        if why == "empty" or why == "more":
            return  # level-triggered: what is still queued is reported again
        # Full or out of descriptors: stop hearing of this listener until there is room
        # (released) or the pause is over; the kernel keeps queueing meanwhile.
        self.reactor.unwatch(listener.fileno())
        self._paused.append(listener)
        if why == "failing":
            self.sweeper.watch_deadline(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        paused, self._paused = self._paused, []
        for listener in paused:
            if listener in self._listeners:
                self._watch(listener)

    def released(self, source: str | bytes = "") -> None:
        super().released(source)
        if self._paused and self.active < self.config.maxconn:
            self._resume()

    def take(
        self,
        conn: socket.socket,
        peer: tuple[str, int],
        destination: tuple[str, int] | None = None,
    ) -> None:
        try:
            conn.setblocking(False)  # TCP_NODELAY comes from the listener (prepare)
            client = ClientConnection(self, conn, peer[0].encode())
        except OSError:
            conn.close()
            self.released(peer[0])
            return
        self.conns.add(client)
        client.start()

    def closed(self, conn: ClientConnection) -> None:
        """A connection ended (ClientConnection.close)."""
        self.conns.discard(conn)
        self.released(conn.ip)

    def start_task(
        self, conn: ClientConnection, step: Callable[[], Awaitable[tuple[bool, bytes]]]
    ) -> None:
        assert self.handlers is not None, "the worker sets handlers before serving"
        self.handlers.start_soon(self._exchange, conn, step)

    async def _exchange(
        self, conn: ClientConnection, step: Callable[[], Awaitable[tuple[bool, bytes]]]
    ) -> None:
        """Run one handed-over exchange; give the connection back or close it."""
        name = self.config.name
        try:
            keep, rest = await step()
        except ClientClosed:
            conn.close()
            return
        except PluginReply as exc:  # (a plugin answered a WebSocket upgrade request)
            if not conn.client.responding:
                try:
                    self.proxy.count(exc.reply.status)
                    conn.client.send_nowait(reply_wire(exc.reply, keep=False))
                except ClientClosed:
                    pass
            conn.close()
            return
        except ProtocolError as exc:
            level = logging.WARNING if exc.status >= 500 else logging.DEBUG
            log.log(level, "frontend %s: %d: %s", name, exc.status, exc)
            conn.answer(exc.status)
            conn.close()
            return
        except ClientTimeout as exc:
            if exc.phase in ("head", "body"):
                conn.answer(408)
            conn.close()  # a response the client stopped reading: nothing to say
            return
        except UpstreamError as exc:
            status = status_for(exc)
            log.warning("frontend %s: %d: %s", name, status, exc)
            conn.answer(status)
            conn.close()
            return
        except ExchangeAborted as exc:
            log.warning("frontend %s: response cut short, connection closed: %s", name, exc)
            conn.close()
            return
        except Exception:
            # A bug: answer 500 unless a response has begun (it would land in its body).
            log.exception("frontend %s: exchange failed", name)
            conn.answer(500)
            conn.close()
            return
        except BaseException:
            conn.close()  # cancelled: the worker is stopping
            raise
        if conn.state != CLOSED:
            conn.resume(keep, rest)
