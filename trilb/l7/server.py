"""A ``mode = "http"`` frontend: accept, then serve a client connection's requests.

Owns the life of a client connection: reading request heads within their deadlines
(``header_timeout`` once a request has begun, ``keepalive_timeout`` between
requests), handing each to the proxy in order (pipelined requests included: the
bytes after one message start the next), and answering with an error status when
a request cannot be served. A task per connection, as DESIGN.md's process model says;
deadlines come from the worker's sweeper, not from cancel scopes. It does not route,
balance or talk to backends (l7/proxy.py).
"""

from __future__ import annotations

import logging
import socket

import trio

from trilb.config.schema import Frontend
from trilb.errors import (
    ClientClosed,
    ClientTimeout,
    ExchangeAborted,
    ProtocolError,
    UpstreamError,
)
from trilb.l4.accept import Acceptor
from trilb.l4.idle import IdleSweeper
from trilb.l7.http1 import RequestParser
from trilb.l7.proxy import HttpBackend, Proxy, error_response, status_for
from trilb.l7.stream import Stream
from trilb.messages import RequestHead

log = logging.getLogger(__name__)


class HttpFrontend(Acceptor):
    """One http frontend inside one worker."""

    def __init__(
        self, config: Frontend, backends: dict[str, HttpBackend], sweeper: IdleSweeper
    ) -> None:
        super().__init__(config)
        self.sweeper = sweeper
        self.proxy = Proxy(config, backends, lambda: self.draining)
        # The nursery connection tasks run in (the worker's handler nursery).
        self.handlers: trio.Nursery | None = None
        # Client connections waiting for their next request; a drain closes them.
        self._idle: set[Stream] = set()
        self.draining = False

    def drain(self) -> None:
        """Stop keeping connections alive: idle ones close now, busy ones after their
        current response (which says ``Connection: close``)."""
        self.draining = True
        for stream in self._idle:
            trio.lowlevel.notify_closing(stream.sock)

    def take(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """A task per connection, in the worker's handler nursery."""
        assert self.handlers is not None, "the worker sets handlers before serving"
        self.handlers.start_soon(self.handle, conn, peer)

    async def handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        client = Stream(conn, self.sweeper, upstream=False)
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._requests(client, peer[0].encode())
        except ClientClosed:
            pass
        except Exception:
            # A bug: answer 500 unless a response has begun (it would land in its body).
            log.exception("frontend %s: connection from %s failed", self.config.name, peer[0])
            if not client.responding:
                await _answer(client, 500)
        finally:
            client.close()
            self.released()

    async def _requests(self, client: Stream, client_ip: bytes) -> None:
        cfg = self.config
        parser = RequestParser(cfg.max_request_line, cfg.max_header_size, cfg.max_headers)
        data = b""
        first = True
        while True:
            try:
                head = parser.feed(data) if data else None
                if head is None:
                    # Bytes already here mean a request has begun: header_timeout.
                    head = await self._read_head(client, parser, first or bool(data))
                    if head is None:
                        return  # the client closed between requests
                client.responding = False
                keep, data = await self.proxy.exchange(client, head, parser.leftover, client_ip)
            except ProtocolError as exc:
                level = logging.WARNING if exc.status >= 500 else logging.DEBUG
                log.log(level, "frontend %s: %d: %s", cfg.name, exc.status, exc)
                await _answer(client, exc.status)
                return
            except ClientTimeout as exc:
                if exc.phase in ("head", "body"):
                    await _answer(client, 408)
                return  # idle: close quietly; response: the client stopped reading
            except UpstreamError as exc:
                status = status_for(exc)
                log.warning("frontend %s: %d: %s", cfg.name, status, exc)
                await _answer(client, status)
                return
            except ExchangeAborted as exc:
                log.warning("frontend %s: response cut short, connection closed: %s",
                            cfg.name, exc)  # fmt: skip
                return
            if not keep or self.draining:
                return
            first = False

    async def _read_head(
        self, client: Stream, parser: RequestParser, started: bool
    ) -> RequestHead | None:
        """Read until a request head is complete; None if the client closes first.

        ``started``: part of a request is here already (or this is the connection's
        first): ``header_timeout`` applies at once, not ``keepalive_timeout``.
        """
        cfg = self.config
        if started:
            client.arm(cfg.header_timeout, "head")
        else:
            client.arm(cfg.keepalive_timeout, "idle")
            self._idle.add(client)
        while True:
            try:
                data = await (client.recv() if started else client.recv_later())
            finally:
                self._idle.discard(client)
            if not data:
                client.disarm()
                return None  # closed, between requests or inside a head: nobody to answer
            head = parser.feed(data)
            if head is not None:
                client.disarm()
                return head
            if not started:  # a head begun and not finished: header_timeout from now
                started = True
                client.arm(cfg.header_timeout, "head")


async def _answer(client: Stream, status: int) -> None:
    """Send an error response, if the client is still there to read it."""
    try:
        await client.send_all(error_response(status))
    except (ClientClosed, ClientTimeout):
        pass
