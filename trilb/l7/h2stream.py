"""One HTTP/2 request stream: the source of its request body, and its exchange.

Theory of operation. As for HTTP/1.1 (l7/client.py), a trio task, a cancel scope and a
trio wait per request were most of a stream's cost (about 455 µs of CPU per request
with a task per stream), so the common exchange runs in callbacks of the worker's
reactor: a request without a body whose balancer pick has an idle pooled connection
is sent at once (from the connection's reader, which parsed it), the backend socket is
watched by the reactor, and a final response that arrives whole in one read goes to
the client as HEADERS and DATA in the connection's next write. Everything else (a body,
a connect, a response in parts or with an interim one before it, a retry) runs in a
task of the connection's nursery: Proxy.forward, then the body relays, with the stream
reading and writing like a socket (it is a Peer). A stream in the reactor's hands that
the client resets, or whose connection ends, gives its backend connection back unclean.

It does not speak the HTTP/2 framing (l7/http2.py does, through l7/h2proto.py) and does
not choose servers or statuses (l7/proxy.py).
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions
import trio

from trilb.balance.algorithms import ServerSlot
from trilb.errors import (
    ClientClosed,
    ClientTimeout,
    ExchangeAborted,
    ProtocolError,
    UpstreamError,
)
from trilb.l7.body import relay_chunked, relay_length, relay_until_close
from trilb.l7.bodyphase import BodyPass
from trilb.l7.forward import forward_response_fields
from trilb.l7.h2proto import FlowControlError, H2Error
from trilb.l7.h2upstream import Exchange, request_fields
from trilb.l7.phases import Flow, PluginReply, reply_fields
from trilb.l7.proxy import IDEMPOTENT, status_for
from trilb.l7.stream import RECV_SIZE, WOULD_BLOCK
from trilb.l7.websocket import relay_for
from trilb.l7.wshandshake import check_h2_request, check_response, h2_response_fields
from trilb.l7.wsrelay import CLOSE_TIMEOUT
from trilb.messages import Framing, RequestHead, ResponseHead
from trilb.plugin.api import Reply

if TYPE_CHECKING:
    from trilb.l7.http2 import H2Server
    from trilb.l7.proxy import HttpBackend
    from trilb.l7.stream import Stream

log = logging.getLogger(__name__)

# What Proxy.forward returns: the backend connection, its slot and backend, what
# followed the request, the response head and the bytes after it.
Forwarded = tuple["Stream", ServerSlot, "HttpBackend", bytes, ResponseHead, bytes]

_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_HUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR


class H2Stream:
    """One request stream of an HTTP/2 connection."""

    __slots__ = ("backend", "chunked", "conn", "data", "ended", "head", "id", "name",
                 "phase", "responding", "scope", "server", "since", "slot", "timeout",
                 "trailers", "upstream", "waiter", "woken")  # fmt: skip

    def __init__(self, conn: H2Server, stream_id: int, head: RequestHead, ended: bool) -> None:
        self.conn = conn
        self.id = stream_id
        self.head = head
        # The request body goes to the backend chunked (no content-length): recv frames
        # the DATA as chunks, which the chunked relay checks and passes on.
        self.chunked = head.framing is Framing.CHUNKED
        self.data: deque[tuple[bytes, int]] = deque()  # (payload, flow-controlled length)
        self.ended = ended
        # The request's trailer fields (checked by l7/h2head.trailer_fields), if it had any.
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.waiter: trio.Event | None = None
        # The scope of the task that runs the stream, made now: a reset that comes with
        # the HEADERS, before the task starts, still cancels it (it then never runs).
        self.scope = trio.CancelScope()
        self.timeout = conn.proxy.config.body_timeout
        self.phase = "body"
        # Waits for DATA end ``timeout`` after the last progress (``touch``) either way.
        self.since = 0.0
        # ``wake`` was called: the next (or current) wait raises at once.
        self.woken = False
        # Peer: this is the client side of the exchange.
        self.upstream = False
        self.name = ""
        self.responding = False
        # The reactor path: the backend connection a response is awaited on.
        self.server: Stream | None = None
        self.slot: ServerSlot | None = None
        self.backend: HttpBackend | None = None

    # --- Peer: the request body -----------------------------------------------------

    async def recv(self, size: int = RECV_SIZE) -> bytes:
        """The next DATA payload (chunk-framed when ``chunked``); b"" after the last."""
        while True:
            while not self.data:
                if self.ended:
                    if self.chunked:  # the last chunk, and the trailers as chunked ones
                        self.chunked = False
                        fields = b"".join(b"%s: %s\r\n" % f for f in self.trailers or ())
                        return b"0\r\n" + fields + b"\r\n"
                    return b""
                if self.woken:
                    self.woken = False
                    raise ClientTimeout(self.phase)
                self.waiter = trio.Event()
                with trio.move_on_after(self.timeout) as waited:
                    await self.waiter.wait()
                if waited.cancelled_caught and trio.current_time() - self.since >= self.timeout:
                    raise ClientTimeout(self.phase)  # (else the other way moved: wait on)
            payload, flowed = self.data.popleft()
            self.woken = False  # (data is progress: a wake meant for a wait is moot)
            self.conn.consumed(self.id, flowed)
            if payload:  # (an empty DATA frame, often the one that ends the stream: none)
                break
        if self.chunked:
            return b"%x\r\n%s\r\n" % (len(payload), payload)
        return payload

    def received(self, payload: bytes, flowed: int, ended: bool) -> None:
        self.data.append((payload, flowed))
        self.end_of_input(ended)

    def end_of_input(self, ended: bool = True) -> None:
        if ended:
            self.ended = True
        if self.waiter is not None:
            self.waiter.set()

    def touch(self) -> None:
        self.since = trio.current_time()

    def arm(self, timeout: float, phase: str) -> None:
        self.timeout = timeout
        self.phase = phase
        self.since = 0.0  # (until a touch, each wait is bounded by itself)

    def wake(self) -> None:
        """Interrupt a wait for DATA: it raises ClientTimeout (as a Stream's wake)."""
        self.woken = True
        if self.waiter is not None:
            self.waiter.set()

    def disarm(self) -> None:
        pass

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """A response body's bytes (the relays' sink).

        Raises:
          ClientClosed: the client reset the stream (or the connection ended).
        """
        try:
            await self.conn.send_data(self, bytes(data))
        except H2Error as exc:
            raise ClientClosed(f"stream {self.id}: {exc}") from None

    # --- the exchange ---------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Serve the request: in the reactor when it can, else in a task."""
        conn = self.conn
        head = self.head
        slot = None
        if head.upgrade is not None:  # (only an extended CONNECT for websocket has one)
            nursery.start_soon(self.run_websocket)
            return
        if conn.proxy.has_plugins and conn.proxy.needs_plugins(head):  # (the task path)
            nursery.start_soon(self.run)
            return
        try:
            routed = conn.proxy.route(head)
        except ProtocolError as exc:
            self.finish_error(exc.status, str(exc))
            return
        if routed.h2 is not None:  # an HTTP/2 backend: stream to stream, in a task
            nursery.start_soon(self.run_h2, routed)
            return
        if self.ended:
            try:
                backend, wire = routed, conn.proxy.request_wire(head, conn.ip)
            except ProtocolError as exc:
                self.finish_error(exc.status, str(exc))
                return
            server, slot = backend.pooled(head)
            if server is not None:
                assert slot is not None
                if self._send(server, slot, backend, wire):
                    return
        nursery.start_soon(self.run, slot)

    def _send(self, server: Stream, slot: ServerSlot, backend: HttpBackend, wire: bytes) -> bool:
        """Send the head on a pooled connection and wait in the reactor; False: a task
        takes over (the connection was dead: it retries on a new one)."""
        try:
            sent = server.send_nowait(wire)
        except UpstreamError:
            sent = 0
        if sent < len(wire):  # a broken pooled connection, or a head over the buffer
            backend.pool.release(slot, server, False)
            return False
        reactor = self.conn.reactor
        self.server, self.slot, self.backend = server, slot, backend
        server.parser.expect(self.head.method)  # type: ignore[union-attr]
        server.timer.on_expire = self._timed_out
        server.arm(backend.config.response_timeout, "response")
        callback = self._on_server
        if server.reactor is None:
            server.reactor = reactor
            reactor.watch(server.fd, callback)
        else:
            reactor.callbacks[server.fd] = callback
        return True

    def _on_server(self, events: int) -> None:
        server = self.server
        if server is None:
            return
        if events & _HUP:
            server.quiet = False
        if events & _IN:
            try:
                self._response(server)
            except H2Error:
                # Reset by the client meanwhile, or the connection closed (a flood).
                self.release(False)
                self.conn.stream_done(self)
            except Exception:
                log.exception("http2 stream %d: exchange failed", self.id)
                self.release(False)
                self.conn.reset_stream(self.id)
                self.conn.stream_done(self)

    def _response(self, server: Stream) -> None:
        parser = server.parser
        assert parser is not None
        while True:
            try:
                data = server.sock.recv(RECV_SIZE)
                server.took(len(data))
            except WOULD_BLOCK:
                return
            except OSError:
                data = b""
            if not data:  # closed before answering: a retry on a new connection, if safe
                self.release(False)
                if self.head.method in IDEMPOTENT:
                    self.conn.nursery_start(self.run, self.slot, True)
                else:
                    self.finish_error(502, f"server {server.name} closed the connection")
                return
            try:
                rhead = parser.feed(data)
            except ProtocolError as exc:
                self.release(False)
                self.finish_error(exc.status, str(exc))
                return
            if rhead is not None:
                break
            if len(data) < RECV_SIZE and not server.tls:
                return  # the rest comes with the next edge (TLS: read until it blocks)
        if len(data) == RECV_SIZE or server.tls:
            server.quiet = False  # more may be queued, with its edge spent
        body = parser.leftover
        if rhead.status < 200:  # an interim response: a task reads on (h2 drops it)
            self._to_task(None, body)
            return
        framing = rhead.framing
        if (framing is Framing.LENGTH and len(body) == rhead.content_length) or (
            framing is Framing.NONE and not body
        ):
            if self.send_head(rhead, body):
                self.release(rhead.keep_alive)
                self.conn.stream_done(self)
            else:  # the body is here but the client's window is short of it
                self._to_task(rhead, body, head_sent=True)
            return
        self._to_task(rhead, body)

    def _to_task(self, rhead: ResponseHead | None, body: bytes, head_sent: bool = False) -> None:
        """The rest of the response goes through a task."""
        server, slot, backend = self.server, self.slot, self.backend
        assert server is not None and slot is not None and backend is not None
        self._detach(server)
        task = (self.relay_in_task, server, slot, backend, rhead, body, head_sent)
        if not self.conn.nursery_start(*task):  # the connection is ending
            backend.pool.release(slot, server, False)

    def _timed_out(self) -> None:
        if self.server is not None:
            name = self.server.name
            self.release(False)
            self.finish_error(504, f"server {name}: response timed out")

    def _detach(self, server: Stream) -> None:
        server.timer.on_expire = server.wake
        if server.reactor is not None:
            server.reactor.callbacks[server.fd] = server.on_idle_event
        self.server = None

    def release(self, reusable: bool) -> None:
        """Give the backend connection the reactor waits on back (if any)."""
        server = self.server
        if server is not None:
            assert self.backend is not None and self.slot is not None
            self._detach(server)
            self.backend.pool.release(self.slot, server, reusable)

    def finish_error(self, status: int, why: str) -> None:
        level = logging.WARNING if status >= 500 else logging.DEBUG
        log.log(level, "http2 stream %d: %d: %s", self.id, status, why)
        self.conn.answer_error(self.id, status)
        self.conn.stream_done(self)

    # --- to an HTTP/2 backend -----------------------------------------------------------

    async def run_h2(self, backend: HttpBackend) -> None:
        """Relay the stream to a stream of an HTTP/2 backend: body both ways at once (a
        bidirectional gRPC call streams both), then trailers."""
        conn = self.conn
        pool = backend.h2
        assert pool is not None
        self.chunked = False  # DATA goes on as DATA
        with self._scope():
            fields = request_fields(self.head, pool.scheme, conn.ip, conn.proxy.scheme)
            # (Not ``ended``: the body may have come whole by now, and still has to go.)
            bodiless = self.head.framing is Framing.NONE
            try:
                exchange = await backend.open_h2(self.head, fields, bodiless)
            except UpstreamError as exc:
                self.finish_error(status_for(exc), str(exc))
                return
            failure: Exception | None = None
            try:
                async with trio.open_nursery() as nursery:
                    if not bodiless:
                        nursery.start_soon(self._upload, exchange)
                    try:
                        await self._download(exchange, backend)
                    except (UpstreamError, ClientClosed, ClientTimeout, H2Error,
                            h2.exceptions.H2Error) as exc:  # fmt: skip
                        failure = exc  # (raised here, it would come out as a group)
                    nursery.cancel_scope.cancel()  # answered: the rest of the upload is moot
            finally:
                exchange.cancel()
            if isinstance(failure, UpstreamError) and not self.responding:
                self.finish_error(status_for(failure), str(failure))
            elif failure is not None:
                self._abort(failure)
            else:
                self.conn.stream_done(self)

    async def _upload(self, exchange: Exchange) -> None:
        """The request body, DATA to DATA; a failure resets the backend's stream, which
        ends the download with an error."""
        timeout = self.conn.proxy.config.body_timeout
        try:
            while data := await self.recv():
                await exchange.send(data, timeout)
            await exchange.end(self.trailers)
        except (UpstreamError, ClientClosed, ClientTimeout, h2.exceptions.H2Error) as exc:
            if exchange.ended and exchange.error is None:
                return  # the server answered in full first: the rest of the body is moot
            log.debug("http2 stream %d: request body: %s", self.id, exc)
            exchange.fail(str(exc))

    async def _download(self, exchange: Exchange, backend: HttpBackend) -> None:
        h2c = self.conn.h2
        fields = await exchange.response(backend.config.response_timeout)
        out = [f for f in fields if f[0] == b":status" or f[0][:1] != b":"]  # (marks kept)
        done = exchange.ended and not exchange.data and exchange.trailers is None
        h2c.send_headers(self.id, out, end_stream=done)
        self.responding = True
        self.conn.kick()
        if done:
            return
        timeout = self.conn.proxy.config.body_timeout
        while data := await exchange.recv(timeout):
            await self.send_all(data)
        if exchange.trailers is not None:  # (gRPC's status)
            h2c.send_headers(self.id, exchange.trailers, end_stream=True)
        else:
            h2c.end_stream(self.id)
        self.conn.kick()

    # --- WebSocket over HTTP/2 ------------------------------------------------------

    async def run_websocket(self) -> None:
        """An extended CONNECT (RFC 8441): the backend gets an HTTP/1.1 upgrade, then the
        stream's DATA and the backend connection carry the WebSocket both ways."""
        conn = self.conn
        proxy = conn.proxy
        with self._scope():
            try:
                key = check_h2_request(self.head)
                pinned = None
                if proxy.has_plugins and proxy.needs_plugins(self.head):
                    # The request phases first: the route they settle on says whether
                    # messages are parsed (as on HTTP/1.1, where they run in the reactor).
                    _, pinned = proxy.before(self.head, conn.ip)
            except PluginReply as exc:
                self.send_reply(exc.reply)
                return
            except ProtocolError as exc:
                self.finish_error(exc.status, str(exc))
                return
            messages = proxy.wants_messages(self.head)
            if messages:  # (see l7/wsmessages.py)
                self.head.headers.remove(b"sec-websocket-extensions")
            forwarded = await self._forward(pinned, False)
            if forwarded is None:
                return
            server, slot, backend, _, rhead, body = forwarded
            if rhead.status != 101:  # refused: its answer goes to the client
                if 200 <= rhead.status < 300:  # (a 2xx would tell the client it is open)
                    backend.pool.release(slot, server, False)
                    self.finish_error(502, f"backend answered {rhead.status}, not 101")
                    return
                await self.relay(server, slot, backend, rhead, body)
                return
            try:
                check_response(rhead, key, b"sec-websocket-extensions" in self.head.headers)
                conn.h2.send_headers(self.id, h2_response_fields(rhead))
                self.responding = True
                conn.kick()
                relay = relay_for(self, server, proxy.config.websocket, self.head, messages)
                await relay.run(b"", body, conn.tunnels)
                conn.h2.end_stream(self.id)
                conn.kick()
                # The client ends its half too (a reset instead, sent at once, can make it
                # drop the Close it has not read yet: Chromium then reports 1006).
                self.arm(CLOSE_TIMEOUT, "websocket close")
                with contextlib.suppress(ClientTimeout):
                    while await self.recv():
                        pass
            except ProtocolError as exc:
                self.finish_error(exc.status, str(exc))
                return
            except H2Error as exc:  # (the client reset it, or the connection)
                self._abort(exc)
                return
            finally:
                backend.pool.release(slot, server, False)
            conn.kick()
            conn.stream_done(self)

    # --- the task path ----------------------------------------------------------------

    async def run(self, slot: ServerSlot | None = None, fresh: bool = False) -> None:
        """The whole exchange in a task: Proxy.forward, then the response."""
        proxy = self.conn.proxy
        try:
            with self._scope():
                await self._run(slot, fresh)
        finally:
            proxy.done(self.head)

    async def _run(self, slot: ServerSlot | None, fresh: bool) -> None:
        forwarded = await self._forward(slot, fresh)
        if forwarded is not None:
            server, slot, backend, _, rhead, body = forwarded
            await self.relay(server, slot, backend, rhead, body)

    async def _forward(self, slot: ServerSlot | None, fresh: bool) -> Forwarded | None:
        """Proxy.forward for this stream; None when the stream was answered (an error
        status, a plugin's Reply) or reset instead."""
        try:
            return await self.conn.proxy.forward(self, self.head, b"", self.conn.ip, slot, fresh)
        except PluginReply as exc:
            self.send_reply(exc.reply)
        except ProtocolError as exc:
            self.finish_error(exc.status, str(exc))
        except UpstreamError as exc:
            self.finish_error(status_for(exc), str(exc))
        except (ClientClosed, ClientTimeout) as exc:
            self._abort(exc)
        return None

    async def relay_in_task(
        self,
        server: Stream,
        slot: ServerSlot,
        backend: HttpBackend,
        rhead: ResponseHead | None,
        body: bytes,
        head_sent: bool = False,
    ) -> None:
        with self._scope():
            if rhead is None:
                try:
                    rhead, body = await self.conn.proxy.read_response_head(
                        server, self.head, backend, body
                    )
                except (ProtocolError, UpstreamError) as exc:
                    backend.pool.release(slot, server, False)
                    status = exc.status if isinstance(exc, ProtocolError) else status_for(exc)
                    self.finish_error(status, str(exc))
                    return
                except BaseException:  # (cancelled: the client reset, the connection ended)
                    backend.pool.release(slot, server, False)
                    raise
            await self.relay(server, slot, backend, rhead, body, head_sent)

    async def relay(
        self,
        server: Stream,
        slot: ServerSlot,
        backend: HttpBackend,
        rhead: ResponseHead,
        body: bytes,
        head_sent: bool = False,
    ) -> None:
        """Send the response and give the backend connection back."""
        clean = False
        run = self.head.plugins
        try:
            if run is not None and run.flow is not None and run.flow.response_body \
                    and rhead.framing is not Framing.NONE:  # fmt: skip
                clean = await self._relay_passed(server, backend, rhead, body, run.flow)
            elif not head_sent and self.send_head(rhead, body):
                clean = rhead.keep_alive
            else:
                clean = await self._relay_body(server, backend, rhead, body)
        except PluginReply as exc:  # a response phase failed: nothing was sent yet
            self.finish_error(exc.reply.status, "a plugin failed in a response phase")
            return
        except (ClientClosed, ClientTimeout, ExchangeAborted) as exc:
            self._abort(exc)
            return
        except H2Error:
            # The stream was reset (by the client) or the connection closed.
            self.conn.reset_stream(self.id)
            self.conn.stream_done(self)
            return
        finally:
            backend.pool.release(slot, server, clean)
        self.conn.stream_done(self)

    def _scope(self) -> trio.CancelScope:
        return self.scope

    def _abort(self, exc: Exception) -> None:
        log.debug("http2 stream %d: %s", self.id, exc)
        self.conn.reset_stream(self.id)
        self.conn.stream_done(self)

    def send_reply(self, reply: Reply) -> None:
        """A plugin's Reply, as the stream's response."""
        plugins = self.head.plugins
        if plugins is not None:
            plugins.ctx.status = reply.status
        self.conn.proxy.count(reply.status)
        fields = [(b":status", b"%d" % reply.status), *reply_fields(reply),
                  (b"content-length", b"%d" % len(reply.body))]  # fmt: skip
        try:
            self.conn.h2.send_headers(self.id, fields, end_stream=not reply.body)
            if reply.body:
                self.conn.h2.send_data(self.id, reply.body, end_stream=True)
        except H2Error:
            self.conn.reset_stream(self.id)  # (a body over the window: a plugin's odd reply)
        self.conn.kick()
        self.conn.stream_done(self)

    def send_head(self, rhead: ResponseHead, body: bytes) -> bool:
        """Send the response head, and the body too when it is all in ``body`` and fits
        one frame; True when the response is complete."""
        if self.head.plugins is not None:
            self.conn.proxy.after(self.head, rhead)  # (PluginReply: the caller's 500)
        return self._send_head(rhead, body)

    def _send_head(self, rhead: ResponseHead, body: bytes) -> bool:
        h2c = self.conn.h2
        framing = rhead.framing
        self.conn.proxy.count(rhead.status)
        fields = [(b":status", b"%d" % rhead.status)]
        fields += forward_response_fields(rhead.headers)
        n = rhead.content_length
        if n is not None and framing is not Framing.CHUNKED:
            fields.append((b"content-length", b"%d" % n))
        if framing is Framing.NONE:
            h2c.send_headers(self.id, fields, end_stream=True)
            self.conn.kick()
            return True
        h2c.send_headers(self.id, fields)
        self.conn.kick()
        if framing is Framing.LENGTH and len(body) == n:
            try:  # the whole body is here: head and body in one write, if one frame fits
                h2c.send_data(self.id, body, end_stream=True)
            except FlowControlError:
                return False
            return True
        return False

    async def _relay_passed(
        self, server: Stream, backend: HttpBackend, rhead: ResponseHead, body: bytes, flow: Flow
    ) -> bool:
        """Send a response whose body goes through response body phases; True when the
        backend connection is clean for reuse.

        Raises:
          PluginReply: a plugin failed before anything was sent (the caller's 500).
          ExchangeAborted: the body broke off after the head went out.
        """
        proxy = self.conn.proxy
        proxy.after(self.head, rhead)
        reusable = rhead.keep_alive and rhead.framing is not Framing.CLOSE
        assert self.head.plugins is not None
        passing = BodyPass(flow.response_body, self.head.plugins.ctx, flow.response_buffer,
                           rhead.framing, rhead.content_length, request=False)  # fmt: skip
        server.arm(backend.config.response_timeout, "response body")
        try:
            out = await passing.start(server, body)
        except (UpstreamError, ProtocolError) as exc:
            raise PluginReply(Reply(502)) from exc  # (nothing sent yet: an error status)
        passing.adapt(rhead)
        if self._send_head(rhead, out if passing.ended else b""):
            server.disarm()
            return reusable and not passing.leftover
        self.arm(proxy.config.body_timeout, "response")
        try:
            if out:
                await self.send_all(out)
            await passing.pump(server, self, chunked=False)
        except (UpstreamError, ProtocolError, PluginReply) as exc:
            raise ExchangeAborted(str(exc)) from exc
        finally:
            server.disarm()
        self.conn.h2.end_stream(self.id)
        self.conn.kick()
        return reusable and not passing.leftover

    async def _relay_body(
        self, server: Stream, backend: HttpBackend, rhead: ResponseHead, body: bytes
    ) -> bool:
        """Relay the rest of a response whose head went out; True when the backend
        connection is clean for reuse."""
        framing = rhead.framing
        self.arm(self.conn.proxy.config.body_timeout, "response")
        server.arm(backend.config.response_timeout, "response body")
        try:
            if framing is Framing.LENGTH:
                extra = await relay_length(server, self, rhead.content_length or 0, body)
            elif framing is Framing.CHUNKED:
                extra = await relay_chunked(server, self, body, True, dechunk=True)
            else:
                await relay_until_close(server, self, body, chunked=False)
                extra = b""
        except (UpstreamError, ProtocolError) as exc:
            raise ExchangeAborted(str(exc)) from exc
        finally:
            server.disarm()
        self.conn.h2.end_stream(self.id)
        self.conn.kick()
        return rhead.keep_alive and framing is not Framing.CLOSE and not extra
