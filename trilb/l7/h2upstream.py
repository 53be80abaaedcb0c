"""HTTP/2 to backend servers (``protocol = "h2"``): multiplexed connections, per worker.

Theory of operation. A server spoken to in HTTP/2 (gRPC services, mostly) takes many
requests on one connection, with trailers after the body, so there is no pool of idle
connections taking one request each, as for HTTP/1.1: each server has a few
connections, and a request opens a stream on one whose streams are below the server's
SETTINGS_MAX_CONCURRENT_STREAMS (and MAX_STREAMS), or on a new connection. A
connection's frames are read by a task in the worker's handler nursery that feeds the
`h2` library (client side, with its header validation on: a backend's fields go to
clients) and hands each stream's events to its Exchange; the exchanges (tasks of the
client side) write under a lock. Flow control is backpressure both ways: response DATA
is acknowledged only as the client side takes it, request DATA waits for the server's
windows. A server's GOAWAY lets its streams in flight finish and sends new ones to
another connection; a connection idle for pool_idle_timeout is closed.

It does not choose servers (the balancer does, l7/proxy.py) and speaks nothing to
clients (l7/h2stream.py relays).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import trio

from trilb.balance.algorithms import ServerSlot
from trilb.errors import UpstreamError
from trilb.l4.connect import open_tcp, start_tls
from trilb.l7.forward import forward_request_fields
from trilb.l7.h2write import FrameWriter
from trilb.messages import RequestHead
from trilb.obs.counters import S_BYTES_IN, S_BYTES_OUT, tally
from trilb.tls import client_context, sni_name

if TYPE_CHECKING:
    from trilb.config.schema import Backend
    from trilb.l4.idle import IdleSweeper
    from trilb.l7.stream import Stream

log = logging.getLogger(__name__)

# Streams trilb opens on one backend connection at most (the server may allow fewer).
MAX_STREAMS = 100
# The receive window of a whole connection; each stream keeps the default 64 KiB, so what
# trilb buffers per stream stays small while streams do not wait for each other.
CONNECTION_WINDOW = 16 << 20
Fields = list[tuple[bytes, bytes]]


class Exchange:
    """One request stream on a backend connection: what the server answered so far."""

    __slots__ = ("conn", "data", "ended", "error", "event", "head", "id", "sent_all",
                 "started", "trailers")  # fmt: skip

    def __init__(self, conn: H2Client, stream_id: int, sent_all: bool) -> None:
        self.conn = conn
        self.id = stream_id
        self.head: Fields | None = None
        self.data: deque[tuple[bytes, int]] = deque()
        self.trailers: Fields | None = None
        self.ended = False  # the server's side
        self.sent_all = sent_all  # ours
        self.error: str | None = None  # the server reset the stream, or the connection died
        self.event = trio.Event()
        self.started = monotonic()  # (the server's latency, in its counters)

    def _wake(self) -> None:
        self.event.set()

    async def _wait(self, timeout: float, what: str) -> None:
        self.event = trio.Event()
        with trio.move_on_after(timeout) as waited:
            await self.event.wait()
        if waited.cancelled_caught:
            raise UpstreamError("timeout", f"server {self.conn.name}: {what} timed out", False)

    async def response(self, timeout: float) -> Fields:
        """The final response's fields (``:status`` first).

        Raises:
          UpstreamError: the server reset the stream or timed out.
        """
        while self.head is None:
            if self.error is not None:
                raise UpstreamError("reset", self.error, retryable=False)
            await self._wait(timeout, "response")
        return self.head

    async def recv(self, timeout: float) -> bytes:
        """The next DATA payload; b"" once the server ended the stream."""
        while True:
            while not self.data:
                if self.error is not None:
                    raise UpstreamError("reset", self.error, retryable=False)
                if self.ended:
                    return b""
                await self._wait(timeout, "response body")
            payload, flowed = self.data.popleft()
            self.conn.consumed(self.id, flowed)
            if payload:
                return payload

    async def send(self, data: bytes, timeout: float) -> None:
        await self.conn.send_data(self, data, timeout)

    async def end(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        """The request is complete: END_STREAM, on its trailers if it has some.

        Raises:
          UpstreamError: the server reset the stream before answering in full.
        """
        try:
            if trailers:
                self.conn.h2.send_headers(self.id, trailers, end_stream=True)
            else:
                self.conn.h2.end_stream(self.id)
        except h2.exceptions.StreamClosedError:
            if not self.ended:
                why = f"server {self.conn.name} closed the stream before the request ended"
                raise UpstreamError("reset", why, retryable=False) from None
            # (It answered in full first, and closed the stream: nothing left to end.)
        self.sent_all = True
        self.conn.kick()

    def fail(self, why: str) -> None:
        """The request side broke: reset the stream; waits on it raise ``why``."""
        self.cancel()
        self.error = why
        self._wake()

    def cancel(self) -> None:
        """The exchange is over: reset the stream if either side is still open (h2
        counts it against the server's stream limit until then), and give back the
        window of the DATA nobody took (the connection's window is shared)."""
        conn = self.conn
        if self.error is None and not (self.ended and self.sent_all):
            try:
                conn.h2.reset_stream(self.id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.H2Error:
                pass
            self.error = "cancelled"
            conn.kick()
        flowed = sum(n for _, n in self.data)
        self.data.clear()
        conn.consumed(self.id, flowed)
        conn.done(self)


class H2Client:
    """One HTTP/2 connection to a backend server."""

    def __init__(self, pool: H2Pool, stream: Stream, slot: ServerSlot) -> None:
        self.pool = pool
        self.stream = stream
        self.slot = slot
        self.name = slot.name
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.exchanges: dict[int, Exchange] = {}
        # The one task that writes (l7/h2write.py): exchanges kick it.
        self.writer = FrameWriter(self.h2, self._write)
        self.closed = False
        self.going_away = False
        self.idle_since = trio.current_time()

    def usable(self) -> bool:
        limit = min(MAX_STREAMS, self.h2.remote_settings.max_concurrent_streams)
        return not (self.closed or self.going_away) and self.h2.open_outbound_streams < limit

    def open(self, fields: Fields, end_stream: bool) -> Exchange:
        """A new stream with this request head.

        Raises:
          UpstreamError: h2 refused it (the server's stream limit, a closed connection).
        """
        sid = self.h2.get_next_available_stream_id()
        try:
            self.h2.send_headers(sid, fields, end_stream=end_stream)
        except h2.exceptions.H2Error as exc:
            raise UpstreamError("refused", f"server {self.name}: cannot open a stream: {exc}",
                                retryable=False) from None  # fmt: skip
        exchange = Exchange(self, sid, end_stream)
        self.exchanges[sid] = exchange
        self.slot.active += 1  # (in flight to it: leastconn's measure, the stats')
        self.kick()
        return exchange

    async def run(self) -> None:
        """Read the server's frames until it closes (a task of the handler nursery)."""
        stream = self.stream
        try:
            while not self.closed:
                try:
                    data = await stream.recv()
                except UpstreamError:
                    data = b""
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.warning("server %s: http/2 protocol error: %s", self.name, exc)
                    break
                for event in events:
                    self._event(event)
                self.kick()
        finally:
            self.close(f"server {self.name} closed the connection")

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.head = event.headers
                status = next((v for n, v in event.headers if n == b":status"), b"")
                if status.isdigit() and 100 <= int(status) <= 599:
                    tally(self.slot.counts, int(status), monotonic() - exchange.started)
                    if self.pool.observe is not None:
                        self.pool.observe(self.slot, int(status))
                exchange._wake()
        elif isinstance(event, h2.events.DataReceived):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is None:
                self.consumed(event.stream_id, event.flow_controlled_length)
            else:
                exchange.data.append((event.data, event.flow_controlled_length))
                exchange._wake()
        elif isinstance(event, h2.events.TrailersReceived):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.trailers = event.headers
        elif isinstance(event, h2.events.StreamEnded):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.ended = True
                exchange._wake()
        elif isinstance(event, h2.events.StreamReset):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is not None and exchange.ended and event.error_code == 0:
                # RFC 9113 8.1: a server that answered in full may reset with NO_ERROR to
                # stop the rest of the request (gRPC servers do): not a failure.
                exchange.sent_all = True
            elif exchange is not None:
                exchange.error = f"server {self.name} reset the stream ({event.error_code!r})"
                exchange._wake()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.writer.window_grew()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.going_away = True  # streams up to its last id finish; no new ones here
            last = event.last_stream_id or 0
            for sid, exchange in self.exchanges.items():
                if sid > last:
                    exchange.error = f"server {self.name} refused the stream (GOAWAY)"
                    exchange._wake()

    async def send_data(self, exchange: Exchange, data: bytes, timeout: float) -> None:
        """A request body's bytes, within the server's windows.

        Raises:
          UpstreamError: the stream or the connection broke, or the server gave no
            window (or did not read) for ``timeout``.
        """
        if exchange.error is not None:
            raise UpstreamError("reset", exchange.error, retryable=False)
        try:
            sent = await self.writer.send_data(exchange.id, data, timeout)
        except h2.exceptions.H2Error as exc:  # (the server reset the stream meanwhile)
            raise UpstreamError("reset", exchange.error or str(exc), retryable=False) from None
        if not sent:
            if self.closed:
                raise UpstreamError("reset", f"server {self.name}: connection lost", False)
            raise UpstreamError("timeout", f"server {self.name}: request body timed out "
                                "(no window, or not read)", False)  # fmt: skip

    def consumed(self, stream_id: int, flowed: int) -> None:
        if flowed:
            try:
                self.h2.acknowledge_received_data(flowed, stream_id)
            except h2.exceptions.H2Error:
                return
            self.kick()

    def kick(self) -> None:
        self.writer.kick()

    async def run_writer(self) -> None:
        """The writer task (in the worker's handler nursery)."""
        try:
            await self.writer.run()
        except UpstreamError as exc:
            self.close(str(exc))

    async def _write(self) -> None:
        data = self.h2.data_to_send()
        if data:
            # A server that stops reading: the connection ends after response_timeout.
            with trio.move_on_after(self.pool.config.response_timeout) as bounded:
                await self.stream.send_all(data)
            if bounded.cancelled_caught:
                raise UpstreamError("timeout", f"server {self.name}: not reading", False)

    def done(self, exchange: Exchange) -> None:
        if self.exchanges.pop(exchange.id, None) is not None:
            self.slot.active -= 1
        if not self.exchanges:
            self.idle_since = trio.current_time()

    def close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        for exchange in self.exchanges.values():
            if not exchange.ended:
                exchange.error = why
            exchange._wake()
        self.writer.fail()
        self.stream.close()
        self.pool.forget(self)


class H2Pool:
    """The HTTP/2 connections of one backend, per server."""

    def __init__(self, config: Backend, slots: list[ServerSlot], sweeper: IdleSweeper) -> None:
        self.config = config
        self.sweeper = sweeper
        self.conns: list[list[H2Client]] = [[] for _ in slots]
        self.nursery: trio.Nursery | None = None  # the worker's handler nursery
        self.tls = client_context(config.tls, alpn=["h2"]) if config.tls else None
        self.sni = [sni_name(config.tls, s.spec) if config.tls else None for s in config.servers]
        self.scheme = b"https" if config.tls else b"http"
        # Told each final status of each server (the backend's eject_on_5xx), if set.
        self.observe: Callable[[ServerSlot, int], None] | None = None

    async def open(self, slot: ServerSlot, fields: Fields, end_stream: bool) -> Exchange:
        """A stream to ``slot``'s server, on a connection with room or a new one.

        Raises:
          UpstreamError: the connect or the handshake failed (retryable).
        """
        for conn in self.conns[slot.index]:
            if conn.usable():
                return conn.open(fields, end_stream)
        conn = await self._connect(slot)
        return conn.open(fields, end_stream)

    async def _connect(self, slot: ServerSlot) -> H2Client:
        from trilb.l7.stream import Stream

        assert self.nursery is not None, "the worker gives every backend its nursery"
        timeout = self.config.connect_timeout
        if slot.address is None:  # (a dns: slot emptied since it was picked)
            raise UpstreamError("unavailable", f"server {slot.name} has no address now", True)
        sock = await open_tcp(slot.address, timeout, self.sweeper)
        if self.tls is not None:
            tls = await start_tls(sock, self.tls, self.sni[slot.index], slot.name, timeout,
                                  self.sweeper)  # fmt: skip
            if tls.selected_alpn_protocol() != "h2":
                tls.close()
                raise UpstreamError("tls", f"server {slot.name} does not speak h2 (ALPN)", True)
            sock = tls
        # From here nothing awaits: a cancelled caller cannot leave the socket unowned.
        stream = Stream(sock, self.sweeper, upstream=True, name=slot.name)
        stream.count_into(slot.counts, S_BYTES_IN, S_BYTES_OUT)
        conn = H2Client(self, stream, slot)
        conn.h2.initiate_connection()
        # The connection's window well above each stream's 64 KiB: one response its client
        # reads slowly does not stall the others on this connection.
        conn.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        conn.kick()  # the preface goes first, then whatever streams open
        self.conns[slot.index].append(conn)
        self.nursery.start_soon(conn.run)
        self.nursery.start_soon(conn.run_writer)
        return conn

    def forget(self, conn: H2Client) -> None:
        conns = self.conns[conn.slot.index]
        if conn in conns:
            conns.remove(conn)

    def moved(self, slot: ServerSlot) -> None:
        """``slot`` has a new address (dns:): no new stream goes to the old one; its
        idle connections close now, busy ones once idle (``expire``)."""
        for conn in list(self.conns[slot.index]):
            conn.going_away = True
            if not conn.exchanges:
                conn.close("the server's address changed")

    def expire(self, now: float) -> None:
        """Close connections with no stream for longer than pool_idle_timeout."""
        limit = self.config.pool_idle_timeout
        for conns in self.conns:
            for conn in list(conns):
                if not conn.exchanges and now - conn.idle_since >= limit:
                    conn.close("idle")


def request_fields(
    head: RequestHead, scheme: bytes, client_ip: bytes, client_scheme: bytes
) -> list[tuple[bytes, bytes]]:
    """The header block of ``head`` for an HTTP/2 backend: pseudo-headers first, the
    forwarding fields as for HTTP/1.1, and ``te: trailers`` kept (gRPC needs it)."""
    headers = head.headers
    host = headers.get(b"host") or b""
    fields = [(b":method", head.method), (b":scheme", scheme), (b":authority", host),
              (b":path", head.target)]  # fmt: skip
    for name, value in forward_request_fields(headers, client_ip, client_scheme, host):
        if name != b"host":
            fields.append((name, value))
    if headers.get(b"te") == b"trailers":
        fields.append((b"te", b"trailers"))
    if head.content_length is not None:
        fields.append((b"content-length", b"%d" % head.content_length))
    return fields
