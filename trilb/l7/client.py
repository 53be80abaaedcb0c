"""A client connection of an http frontend, driven by the worker's reactor.

Theory of operation. A trio wait costs about 10 µs of Python (l4/reactor.py says how
that was measured), and proxying a request through a task per connection needs two
per request (the request, the response): with a strict parser, forwarding fields and
pools on top, that is most of a worker's CPU at keep-alive rates, and it kept trilb
under half of HAProxy's requests/s. So the client socket, and the backend connection
while a request waits for its answer, are watched by the worker's edge-triggered
reactor, and the common exchange runs in its callbacks, with no task switch:

- a request without a body (and without ``Expect``) whose balancer pick has an idle
  pooled connection: its head is sent at once (``Proxy.prepare`` built it);
- a final response whose head and whole body (a Content-Length, or none) arrived in
  one read: relayed in one send, the backend connection goes back to its pool.

Everything else (request bodies, a server with no idle connection, an interim or a
streamed response, a retry after a stale pooled connection) is handed to a task of the
worker's handler nursery that runs the general path of l7/proxy.py for that one
exchange: the same steps, the same errors and statuses. The connection comes back to
the reactor after it. Bytes that arrive on a socket while a task owns it make edges the
reactor ignores, so a connection coming back reads once before waiting again.

Deadlines are the sweeper's, as for tasks: in the reactor's hands a client's deadline
calls ``_client_timeout`` (close an idle connection, 408 a slow head, drop a client that
does not read), a waiting backend's calls ``_upstream_timeout`` (504). It does not parse,
route or choose statuses (http1, router, proxy do); it sequences one connection.
"""

from __future__ import annotations

import fcntl
import logging
import select
import socket
import sys
import termios
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from trilb.balance.algorithms import ServerSlot
from trilb.errors import ClientClosed, ProtocolError, UpstreamError
from trilb.l7.http1 import RequestParser
from trilb.l7.http2 import H2Server
from trilb.l7.phases import PluginReply, Run, reply_wire
from trilb.l7.proxy import IDEMPOTENT, HttpBackend, error_response, status_for
from trilb.l7.stream import RECV_SIZE, WOULD_BLOCK, Stream
from trilb.l7.websocket import proxy_websocket
from trilb.messages import Framing, RequestHead, ResponseHead
from trilb.obs.counters import F_BYTES_IN, F_BYTES_OUT
from trilb.plugin.api import Context, Reply
from trilb.plugin.chains import run_connect

if TYPE_CHECKING:
    from trilb.l7.server import HttpFrontend

log = logging.getLogger(__name__)

# States of a connection.
IDLE = 0  # between requests: keepalive_timeout
HEAD = 1  # a request head has begun: header_timeout
WAITING = 2  # a request went to a backend; the reactor waits for its response
WRITING = 3  # a response did not fit the socket buffer; the rest waits for room
TASK = 4  # a task runs this exchange (l7/proxy.py)
CLOSED = 5
HANDSHAKE = 6  # TLS: the handshake runs (handshake_timeout)

_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_HUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR

Step = Callable[[], Awaitable[tuple[bool, bytes]]]


class ClientConnection:
    """One client connection of an http frontend, from accept to close."""

    __slots__ = (
        "backend",
        "client",
        "fe",
        "fresh",
        "h2",
        "head",
        "ip",
        "keep",
        "more",
        "out",
        "parser",
        "rest",
        "slot",
        "sock",
        "state",
        "tls",
        "upstream",
    )

    def __init__(self, fe: HttpFrontend, sock: socket.socket, ip: bytes) -> None:
        self.fe = fe
        # TLS: the socket is an ssl.SSLSocket; reads and writes go through OpenSSL.
        self.tls = fe.tls is not None
        if fe.tls is not None:
            sock = fe.tls.wrap(sock)
        self.sock = sock
        self.ip = ip
        cfg = fe.config
        self.client = Stream(sock, fe.sweeper, upstream=False)
        self.client.count_into(fe.counts, F_BYTES_IN, F_BYTES_OUT)
        self.client.timer.on_expire = self._client_timeout
        self.parser = RequestParser(cfg.max_request_line, cfg.max_header_size, cfg.max_headers)
        # A first request is expected at once (header_timeout), after the handshake.
        self.state = HANDSHAKE if self.tls else HEAD
        # An input edge came while the connection was busy: read once it is idle again.
        self.more = False
        # Nothing read yet: the first bytes may be HTTP/2's connection preface (h2c).
        self.fresh = True
        # The HTTP/2 connection this became (its task runs it), for the drain's GOAWAY.
        self.h2: H2Server | None = None
        # The exchange in flight: its head, what followed it, its backend and connection.
        self.head: RequestHead | None = None
        self.rest = b""
        self.backend: HttpBackend | None = None
        self.slot: ServerSlot | None = None
        self.upstream: Stream | None = None
        # What is left of a response the client socket did not take at once, and
        # whether the connection stays open once it is out.
        self.out: memoryview | None = None
        self.keep = False

    def start(self) -> None:
        chains = self.fe.proxy.chains
        if chains is not None and chains.connect:
            ctx = Context(self.ip.decode("latin-1"), self.fe.proxy.scheme_name,
                          self.fe.config.name)  # fmt: skip
            reply = run_connect(chains.connect, ctx)
            if reply is not None:  # refused (a TLS client gets no answer it could read)
                if self.fe.tls is None:
                    self.fe.proxy.count(reply.status)
                    self.client.send_nowait(reply_wire(reply, keep=False))
                self.close()
                return
        tls = self.fe.tls
        if tls is not None:
            self.client.arm(tls.handshake_timeout, "handshake")
        else:
            self.client.arm(self.fe.config.header_timeout, "head")
        self.client.reactor = self.fe.reactor
        self.fe.reactor.watch(self.client.fd, self._on_client)
        if tls is not None:
            self._handshake()  # the ClientHello may be here already

    def _handshake(self) -> None:
        try:
            self.sock.do_handshake()  # type: ignore[attr-defined]  # an SSLSocket
        except WOULD_BLOCK:
            return  # the next edge continues it
        except (OSError, ValueError) as exc:
            # Scanners, plain HTTP on the TLS port, unknown CAs at the client: routine.
            log.debug("frontend %s: tls handshake failed: %s", self.fe.config.name, exc)
            self.close()
            return
        if self.sock.selected_alpn_protocol() == "h2":  # type: ignore[attr-defined]
            self._serve_h2(b"")
            return
        self.state = HEAD
        self.client.arm(self.fe.config.header_timeout, "head")
        self._read()  # the first request may have come with the client's Finished

    # --- reading requests ------------------------------------------------------------

    def _on_client(self, events: int) -> None:
        try:
            state = self.state
            if state <= HEAD:
                if events & _IN:
                    self._read()
            elif state == WRITING:
                if events & _IN:
                    self.more = True  # the next request, or the client's close: after
                if events & _OUT:
                    self._write()
            elif state == HANDSHAKE:
                self._handshake()
            elif events & _IN:
                self.more = True  # pipelined bytes or the client's close: after the response
        except Exception:
            self._bug()

    def _read(self) -> None:
        sock = self.sock
        tls = self.tls
        while True:
            try:
                data = sock.recv(RECV_SIZE)
                self.client.took(len(data))
            except WOULD_BLOCK:
                return
            except OSError:
                self.close()  # (TLS: also the client's close_notify, or a bad record)
                return
            if not data:
                self.close()  # between requests or inside a head: nobody to answer
                return
            # A short plain read took all the socket held. A TLS read returns one record
            # at most: the socket is drained when OpenSSL holds nothing more and the
            # kernel neither (asking costs less than a read that fails with WantRead).
            more = tls_more(sock) if tls else len(data) == RECV_SIZE
            if self._feed(data):
                if more:
                    self.more = True  # more is queued: its edge is spent, read it later
                return
            if not more:
                return

    def _feed(self, data: bytes) -> bool:
        """Parse request bytes; True once they made a head (and it is being served)."""
        if self.fresh:
            self.fresh = False
            if data[:3] == b"PRI":  # HTTP/1.1 has no PRI method: the HTTP/2 preface
                self._serve_h2(data)
                return True
        try:
            head = self.parser.feed(data)
        except ProtocolError as exc:
            self._refuse(exc)
            return True
        if head is None:
            if self.state == IDLE:  # a head has begun: header_timeout from now
                self.state = HEAD
                self.client.arm(self.fe.config.header_timeout, "head")
            return False
        self._request(head, self.parser.leftover)
        return True

    # --- one exchange ----------------------------------------------------------------

    def _request(self, head: RequestHead, rest: bytes) -> None:
        client = self.client
        client.disarm()
        client.responding = False
        self.head = head
        self.rest = rest
        fe = self.fe
        proxy = fe.proxy
        pinned = None
        try:
            if proxy.has_plugins and proxy.needs_plugins(head):
                # The request phases are plain calls: they run here, on this path too.
                backend, pinned = proxy.before(head, self.ip)
                wire = proxy.request_wire(head, self.ip)
            else:
                backend, wire = proxy.prepare(head, self.ip)
        except PluginReply as exc:
            self._reply(exc.reply)
            return
        except ProtocolError as exc:
            self._refuse(exc)
            return
        framing = head.framing
        run = head.plugins
        if (
            (framing is not Framing.NONE and not _body_in(head, rest, run))
            or head.expect_continue
            or head.upgrade
            or (run is not None and run.passes_response)
        ):  # (a body still to come, or a plugin's body phase: a task's work)
            self._hand_over(self._step(head, rest, pinned))
            return
        upstream, slot = backend.pooled(head, pinned)
        if upstream is None:
            # No idle connection to that server: a task connects (to it first).
            self._hand_over(partial(proxy.exchange, client, head, rest, self.ip, slot))
            return
        assert slot is not None
        self.backend = backend
        self.slot = slot
        self.upstream = upstream
        if framing is Framing.LENGTH:  # the whole body came with the head: one send
            n = head.content_length or 0
            wire += rest[:n]
            self.rest = rest[n:]
        try:
            sent = upstream.send_nowait(wire)
        except UpstreamError as exc:
            self._upstream_failed(exc)
            return
        if sent < len(wire):  # a head larger than the socket buffer: let a task finish it
            self._respond_in_task(b"", wire[sent:])
            return
        upstream.parser.expect(head.method)  # type: ignore[union-attr]
        upstream.timer.on_expire = self._upstream_timeout
        upstream.arm(backend.config.response_timeout, "response")
        if upstream.reactor is None:
            upstream.reactor = fe.reactor
            fe.reactor.watch(upstream.fd, self._on_upstream)
        else:
            fe.reactor.callbacks[upstream.fd] = self._on_upstream
        self.state = WAITING

    def _step(self, head: RequestHead, rest: bytes, pinned: ServerSlot | None = None) -> Step:
        """The task that serves ``head`` off the reactor's common path (``pinned``: the
        server a plugin asked for, if available)."""
        fe = self.fe
        if head.upgrade == b"websocket":
            return partial(proxy_websocket, fe.proxy, self.client, head, rest, self.ip, fe.tunnels)
        # (Any other upgrade is not made: forwarding drops the Upgrade field.)
        return partial(fe.proxy.exchange, self.client, head, rest, self.ip, pinned)

    def _on_upstream(self, events: int) -> None:
        upstream = self.upstream
        if upstream is None or self.state != WAITING:
            return
        if events & _HUP:
            upstream.quiet = False  # the server's close: the pool polls before reuse
        if not events & _IN:
            return
        try:
            self._response()
        except Exception:
            self._bug()

    def _response(self) -> None:
        upstream = self.upstream
        assert upstream is not None and upstream.parser is not None
        parser = upstream.parser
        while True:
            try:
                data = upstream.sock.recv(RECV_SIZE)
                upstream.took(len(data))
            except WOULD_BLOCK:
                return
            except OSError as exc:
                why = f"server {upstream.name}: {exc.strerror}"
                self._upstream_failed(UpstreamError("reset", why, retryable=False))
                return
            if not data:
                why = f"server {upstream.name} closed the connection before answering"
                self._upstream_failed(UpstreamError("closed", why, retryable=False))
                return
            try:
                rhead = parser.feed(data)
            except ProtocolError as exc:
                self._release(False)
                self._refuse(exc)
                return
            if rhead is not None:
                break
            if len(data) < RECV_SIZE and not upstream.tls:
                return  # the rest of the head comes with the next edge
        if len(data) == RECV_SIZE or upstream.tls:
            upstream.quiet = False  # more may be queued, with its edge spent
        body = parser.leftover
        framing = rhead.framing
        if rhead.status < 200 and rhead.status != 101:
            self._respond_in_task(body, b"", rhead)  # interim: a task passes it on, reads on
            return
        head, slot, backend = self.head, self.slot, self.backend
        assert head is not None and slot is not None and backend is not None
        if head.plugins is not None:
            head.plugins.ctx.server = slot.name
        if not (
            (framing is Framing.LENGTH and len(body) == rhead.content_length)
            or (framing is Framing.NONE and not body)
        ):
            client, rest, respond = self.client, self.rest, self.fe.proxy.respond
            self._hand_over_response(
                partial(respond, client, upstream, slot, backend, head, rest, rhead, body)
            )
            return
        try:
            if head.plugins is not None:
                self.fe.proxy.after(head, rhead)
            wire, keep = self.fe.proxy.response_wire(head, rhead)
        except PluginReply as exc:
            self._release(False)
            self._refuse(ProtocolError(exc.reply.status, "a plugin failed in on_response"))
            return
        except ProtocolError as exc:
            self._release(False)
            self._refuse(exc)
            return
        self._release(rhead.keep_alive)
        if head.plugins is not None:
            self.fe.proxy.done(head)
        self._send_final(wire + body if body else wire, keep)

    def _reply(self, reply: Reply) -> None:
        """A plugin answered the request: send its Reply, then serve the next one."""
        head = self.head
        assert head is not None
        keep = head.keep_alive and head.framing is Framing.NONE and not self.fe.draining
        self.fe.proxy.done(head, reply.status)
        self.fe.proxy.count(reply.status)
        if not keep:
            self.rest = b""
        self._send_final(reply_wire(reply, keep), keep)

    def _send_final(self, data: bytes, keep: bool) -> None:
        """Send a whole response (what the socket does not take waits for its room)."""
        try:
            sent = self.client.send_nowait(data)
        except ClientClosed:
            self.close()
            return
        if sent < len(data):
            self.out = memoryview(data)[sent:]
            self.keep = keep
            self.state = WRITING
            self.client.arm(self.fe.config.body_timeout, "response")
            return
        self._next(keep)

    def _write(self) -> None:
        out = self.out
        assert out is not None
        try:
            sent = self.client.send_nowait(out)
        except ClientClosed:
            self.close()
            return
        if sent < len(out):
            self.out = out[sent:]
            self.client.touch()
            return
        self.out = None
        self.client.disarm()
        self._next(self.keep)

    def _next(self, keep: bool) -> None:
        """The response is out: wait for the next request, or close."""
        self.head = None
        if not keep or self.fe.draining:
            self.close()
            return
        self.client.responding = False  # an error status may answer the next request
        self.state = IDLE
        self.client.arm(self.fe.config.keepalive_timeout, "idle")
        rest = self.rest
        if rest:
            self.rest = b""
            if self._feed(rest):  # pipelined: the next head was complete already
                return
        if self.more:  # bytes came while busy: their edge is spent, read them now
            self.more = False
            self._read()

    def _release(self, reusable: bool) -> None:
        upstream = self.upstream
        if upstream is not None:
            assert self.backend is not None and self.slot is not None
            upstream.timer.on_expire = upstream.wake
            if upstream.reactor is not None:
                self.fe.reactor.callbacks[upstream.fd] = upstream.on_idle_event
            self.backend.pool.release(self.slot, upstream, reusable)
            self.upstream = None

    def _upstream_failed(self, exc: UpstreamError) -> None:
        """The backend connection broke before any response byte."""
        head = self.head
        assert head is not None and self.slot is not None
        slot = self.slot
        self._release(False)
        if head.method in IDEMPOTENT and head.framing is Framing.NONE:  # (as Proxy.forward)
            # A pooled connection the server had closed: once more, on a new one.
            proxy = self.fe.proxy
            client, rest = self.client, self.rest
            self._hand_over(partial(proxy.exchange, client, head, rest, self.ip, slot, True))
            return
        self._refuse(exc)

    # --- hand-over to a task -----------------------------------------------------------

    def _serve_h2(self, first: bytes) -> None:
        """The connection speaks HTTP/2: a task runs it to its end (l7/http2.py)."""
        fe = self.fe
        server = H2Server(fe.proxy, self.client, self.ip, fe.config.keepalive_timeout, fe.reactor,
                          fe.tunnels)  # fmt: skip
        self.h2 = server
        if fe.draining:
            server.closing = True

        async def step() -> tuple[bool, bytes]:
            await server.serve(first)
            return False, b""

        self._hand_over(step)

    def _respond_in_task(
        self, received: bytes, unsent: bytes, interim: ResponseHead | None = None
    ) -> None:
        """A task finishes sending the head (``unsent``), passes on ``interim``, reads the
        final response head (``received``: bytes of it already here) and relays it."""
        upstream, head, slot, backend = self.upstream, self.head, self.slot, self.backend
        assert upstream is not None and head is not None
        assert slot is not None and backend is not None
        client, rest, proxy = self.client, self.rest, self.fe.proxy

        async def step() -> tuple[bool, bytes]:
            if unsent:
                try:
                    await upstream.send_all(unsent)
                except BaseException:
                    backend.pool.release(slot, upstream, False)
                    raise
            return await proxy.respond(client, upstream, slot, backend, head, rest, None,
                                       received, interim)  # fmt: skip

        self._hand_over_response(step)

    def _hand_over_response(self, step: Step) -> None:
        upstream = self.upstream
        assert upstream is not None
        upstream.timer.on_expire = upstream.wake
        if upstream.reactor is not None:
            self.fe.reactor.callbacks[upstream.fd] = upstream.on_idle_event
        self.upstream = None  # the task's now, and the pool's after it
        self._hand_over(step)

    def _hand_over(self, step: Step) -> None:
        self.state = TASK
        self.client.timer.on_expire = self.client.wake
        self.fe.start_task(self, step)

    def resume(self, keep: bool, rest: bytes) -> None:
        """Back from a task: the exchange is over."""
        self.client.timer.on_expire = self._client_timeout
        self.rest = rest
        self.more = True  # edges that came while the task had the socket were ignored
        try:
            self._next(keep)
        except Exception:
            self._bug()

    # --- errors, timeouts, close -----------------------------------------------------

    def _refuse(self, exc: ProtocolError | UpstreamError) -> None:
        """Answer an error status and close."""
        if isinstance(exc, UpstreamError):
            status = status_for(exc)
            log.warning("frontend %s: %d: %s", self.fe.config.name, status, exc)
        else:
            status = exc.status
            level = logging.WARNING if status >= 500 else logging.DEBUG
            log.log(level, "frontend %s: %d: %s", self.fe.config.name, status, exc)
        if self.head is not None and self.head.plugins is not None:
            self.fe.proxy.done(self.head, status)
        elif self.head is None and self.fe.proxy.access is not None:
            self.fe.proxy.log_unparsed(self.ip, status)
        self.answer(status)
        self.close()

    def answer(self, status: int) -> None:
        """Send an error response if the socket takes it now; it is small and final."""
        if self.client.responding:
            return  # a response has begun: an error status would land inside it
        try:
            self.client.send_nowait(error_response(status))
        except ClientClosed:
            return
        self.fe.proxy.count(status)

    def _client_timeout(self) -> None:
        try:
            self._timed_out()
        except Exception:
            self._bug()

    def _timed_out(self) -> None:
        state = self.state
        if state == TASK:
            self.client.wake()  # a task waits on the socket: it raises ClientTimeout
        elif state == HEAD:
            if self.fe.proxy.access is not None:
                self.fe.proxy.log_unparsed(self.ip, 408)
            self.answer(408)
            self.close()
        elif state != CLOSED:  # (a handshake too: no HTTP to answer with yet)
            self.close()  # idle between requests, or a client that does not read

    def _upstream_timeout(self) -> None:
        if self.state != WAITING:
            return
        upstream = self.upstream
        assert upstream is not None
        try:
            self._refuse(UpstreamError("timeout", f"server {upstream.name}: response timed out",
                                       retryable=False))  # fmt: skip
        except Exception:
            self._bug()

    def _bug(self) -> None:
        # A failing callback loses its connection, never the reactor or the worker.
        log.exception("frontend %s: connection failed", self.fe.config.name)
        self.answer(500)
        self.close()

    def drain(self) -> None:
        """The worker drains while this connection is idle: read what the client sent
        since the reactor last looked. A request that arrived is served (the drain makes
        its response say ``Connection: close``); with nothing there the connection closes
        now, FIN first: a request that crosses the close then meets EOF at the client,
        the keep-alive race it may retry (RFC 9112 9.3.1), never a bare reset."""
        self._on_client(_IN)
        if self.state != IDLE:
            return
        if not self.tls:  # (TLS ends with close_notify, in Stream.close)
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # gone already: close() below is all there is to do
        self.close()

    def close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._release(False)
        self.client.close()
        # Break the reference cycles (deadline -> bound method -> self, parser <->
        # llhttp): the connection is freed now, not at the next garbage collection.
        self.client.timer.on_expire = _ignore_expiry
        self.parser.close()
        self.fe.closed(self)


def _body_in(head: RequestHead, rest: bytes, run: Run | None) -> bool:
    """Whether ``head``'s whole body is in ``rest`` and goes on as it is (no plugin
    body phase): the request is then sent in one piece from the reactor."""
    n = head.content_length
    return (
        head.framing is Framing.LENGTH
        and n is not None
        and len(rest) >= n
        and (run is None or run.flow is None or not run.flow.request_body)
    )


def tls_more(sock: socket.socket) -> bool:
    """Whether a TLS socket has more to read: bytes OpenSSL holds, or the kernel does."""
    return bool(sock.pending()) or _queued(sock.fileno()) > 0  # type: ignore[attr-defined]


def _queued(fd: int) -> int:
    """Bytes waiting in a socket's receive queue."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, _INT), sys.byteorder)


_INT = bytes(4)


def _ignore_expiry() -> None:
    """A closed connection's deadline (disarmed: never called)."""
