"""HTTP/2 from clients: one connection's frames, and each stream as a request.

Theory of operation. The protocol is l7/h2proto.py's (sans-IO): this module feeds it
the client's bytes, acts on its calls (the on_* methods) and writes what it queued. A connection is
one trio task (handed over by l7/client.py after the connection preface, or after a TLS
handshake that chose "h2" by ALPN); each request stream is a task in the connection's
nursery that runs the request half of the HTTP/1.1 path, Proxy.forward (route, balance,
pooled HTTP/1.1 backend connection, retries, the same statuses), with the stream as the
source of the body. So HTTP/2 adds no second proxy: streams are multiplexed over the
keep-alive pools.

- Request heads are built and checked by l7/h2head.py (RFC 9113's rules for header
  blocks, in the one pass that builds the head); the protocol checks a content-length
  against the DATA. A malformed request gets a 400 (or a stream or connection error
  from the protocol), never a backend request. Each stream's exchange
  is l7/h2stream.py's: in reactor callbacks when it can, else in a task.
- Flow control is backpressure both ways: request DATA is acknowledged (WINDOW_UPDATE)
  only once relayed to the backend, and response DATA is sent only within the client's
  windows, so a client that stops reading stalls its stream (up to body_timeout) instead
  of making trilb buffer the response. One lock serializes writes to the socket; a
  writer that waits for room holds up the others, which is the backpressure.
- Limits: at most max_concurrent_streams streams, a header list of max_header_size (the
  protocol refuses a larger decoded list, the HPACK bomb, and more than 64 CONTINUATION
  frames for one block); a client that causes stream resets (its own or trilb's)
  faster than RESET_BUDGET per second (rapid reset, CVE-2023-44487, and MadeYouReset,
  CVE-2025-8671), sends PING or SETTINGS faster than CONTROL_BUDGET or frames that
  carry nothing faster than IDLE_BUDGET is sent GOAWAY (ENHANCE_YOUR_CALM) and
  dropped. A window pushed past 2^31-1 is a FLOW_CONTROL_ERROR.
- Drain and shutdown: GOAWAY with the last stream id; streams in flight finish.

It does not parse HTTP/1.1 (l7/http1.py) or choose servers (l7/proxy.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from trilb.config.http import MAX_H2_STREAMS
from trilb.errors import ClientClosed, ClientTimeout, ProtocolError
from trilb.l7.h2head import request_head, trailer_fields
from trilb.l7.h2proto import (
    ENHANCE_YOUR_CALM,
    ERROR_NAMES,
    INTERNAL_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    H2ConnectionError,
    H2Error,
    H2Protocol,
)
from trilb.l7.h2stream import H2Stream
from trilb.l7.h2write import FrameWriter
from trilb.l7.proxy import REASONS

if TYPE_CHECKING:
    from trilb.l4.reactor import Reactor
    from trilb.l7.proxy import Proxy
    from trilb.l7.stream import Stream
    from trilb.l7.wsrelay import Tunnels

log = logging.getLogger(__name__)

# Stream resets a client may cause per second before it is cut off: far above what a
# browser cancelling navigations does, far below a rapid-reset flood (thousands/s).
RESET_BUDGET = 200
# The receive window of a whole connection (16 MiB), above the 64 KiB of each stream:
# uploads on several streams at once do not wait for each other (RFC 9113's default is
# 64 KiB for both). Twice what the most streams a frontend may allow can hold: the
# protocol gives windows back in halves, so a smaller one could stall them.
CONNECTION_WINDOW = 2 * MAX_H2_STREAMS * (64 << 10)
# PING and SETTINGS frames per second (each makes trilb answer): a client needs a few;
# a flood of them is an attack on the CPU and on the write side (CVE-2019-9512/9515).
CONTROL_BUDGET = 500
# Frames that carry nothing (empty DATA, PRIORITY, unknown types) per second: browsers
# send a few per request; a flood of them costs CPU for nothing (CVE-2019-9518).
IDLE_BUDGET = 1000


class H2Server:
    """One HTTP/2 client connection, from its preface to its close."""

    def __init__(
        self,
        proxy: Proxy,
        client: Stream,
        ip: bytes,
        keepalive: float,
        reactor: Reactor,
        tunnels: Tunnels,
    ) -> None:
        self.proxy = proxy
        # The frontend's WebSocket connections (RFC 8441 streams join them).
        self.tunnels = tunnels
        self.client = client
        self.reactor = reactor
        self.ip = ip
        self.keepalive = keepalive
        # Fields are checked by request_head (l7/h2head.py) in the pass that builds the
        # head; outbound fields come from a response llhttp accepted, names lowercased
        # and hop-by-hop fields dropped by forward_response_fields.
        config = proxy.config
        self.h2 = H2Protocol(self, config.max_concurrent_streams, config.max_header_size,
                             CONNECTION_WINDOW)  # fmt: skip
        self.streams: dict[int, H2Stream] = {}
        self.send_lock = trio.Lock()
        # The one task that writes (l7/h2write.py); ``writing`` while a write runs.
        self.writer = FrameWriter(self.h2, self.flush)
        self.writing = False
        self.resets = Budget(RESET_BUDGET)
        self.control = Budget(CONTROL_BUDGET)
        self.idle = Budget(IDLE_BUDGET)
        # GOAWAY sent or received: no new streams; the connection ends with its last one.
        self.closing = False
        self.nursery: trio.Nursery | None = None
        # The last stream a drain's GOAWAY accepts.
        self.last_stream = 2**31 - 1

    async def serve(self, first: bytes) -> None:
        """Run the connection until the client closes, misbehaves or goes idle."""
        self.h2.initiate()
        client = self.client
        client.arm(self.keepalive, "idle")  # only while no stream is open: see _opened
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self.closing:  # (the worker drains already)
                    self.h2.close_connection()
                await self.flush()
                nursery.start_soon(self._writer)
                try:
                    await self._read(first)
                except (ClientClosed, ClientTimeout):
                    pass  # (caught here: out of the nursery it would be an ExceptionGroup)
                nursery.cancel_scope.cancel()
            # Also after _end_if_done's cancel: a GOAWAY, the end of the last stream. Not
            # when the writer was cut off inside a write: TLS would take a different
            # buffer for the rest of that one (OpenSSL's write retry rule).
            if not self.writing and not self.writer.dead:
                await self.flush()
        except (ClientClosed, ClientTimeout):
            pass  # the connection is gone or idle: its streams are cancelled with it
        finally:
            client.disarm()
            for stream in self.streams.values():
                stream.release(False)  # (those the reactor was serving)

    async def _read(self, data: bytes) -> None:
        client = self.client
        while True:
            if data:
                client.touch()
                if not await self._received(data):
                    return
            if self.closing and not self.streams:
                return
            data = await client.recv()
            if not data:
                return

    async def _received(self, data: bytes) -> bool:
        """Feed bytes to the protocol, which calls the on_* methods below; False: the
        connection is over."""
        try:
            self.h2.receive_data(data)
        except H2ConnectionError as exc:
            if exc.error_code == ENHANCE_YOUR_CALM:
                log.warning("http2 client %s: %s: connection closed", self.ip.decode(), exc)
            else:
                log.debug("http2 client: protocol error: %s", exc)
            if self.proxy.access is not None:  # (as HTTP/1.1's malformed requests are)
                self.proxy.log_unparsed(
                    self.ip, 400, f"h2={ERROR_NAMES.get(exc.error_code, hex(exc.error_code))}"
                )
            await self.flush()
            return False
        if self.h2.has_data_to_send:  # (its answers: SETTINGS and PING acks, resets...)
            self.kick()
        return True

    # --- what the client sent (called by H2Protocol.receive_data) ----------------------

    def on_data(self, stream_id: int, data: bytes, flowed: int, ended: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:  # a stream we reset or answered already: give back
            self.h2.acknowledge_received_data(flowed, stream_id)
        else:
            stream.received(data, flowed, ended)

    def on_trailers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        """A request's trailers: kept for its backend, or the stream is malformed."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        try:
            stream.trailers = trailer_fields(fields)
        except ProtocolError as exc:  # RFC 9113 8.1.1: a stream error, part of it sent
            log.debug("http2 client: stream %d: %s", stream_id, exc)
            self.reset_stream(stream_id, PROTOCOL_ERROR)
            self._reset(stream_id)
            return
        stream.end_of_input()

    def on_reset(self, stream_id: int) -> None:
        self._reset(stream_id)
        if not self.resets.spend(trio.current_time()):
            raise H2ConnectionError(ENHANCE_YOUR_CALM, "too many stream resets in a second")

    def on_idle_frame(self) -> None:
        if not self.idle.spend(trio.current_time()):
            raise H2ConnectionError(ENHANCE_YOUR_CALM, "too many empty frames in a second")

    def on_ping(self) -> None:
        if not self.control.spend(trio.current_time()):
            raise H2ConnectionError(
                ENHANCE_YOUR_CALM, "too many PING and SETTINGS frames in a second"
            )

    def on_settings(self) -> None:
        self.on_ping()  # (one budget for both)
        self.writer.window_grew()  # (its initial window may have)

    def on_window(self) -> None:
        self.writer.window_grew()

    def on_goaway(self) -> None:
        self.closing = True

    def _reset(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.scope.cancel()  # (also before its task starts: then it never runs)
            stream.release(False)  # (a stream the reactor was serving)
            self._closed(stream)

    def on_request(self, sid: int, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        if (self.closing and sid > self.last_stream) or self.nursery is None:
            self.reset_stream(sid, REFUSED_STREAM)  # opened after our GOAWAY
            return
        try:
            head = request_head(fields, ended)
        except ProtocolError as exc:
            log.debug("http2 client: stream %d: %d: %s", sid, exc.status, exc)
            self.answer_error(sid, exc.status)
            if not ended:  # (no body for a request refused: RFC 9113 8.1)
                self.reset_stream(sid, NO_ERROR)
            return
        if head.content_length is not None:
            self.h2.expect_length(sid, head.content_length)
        stream = H2Stream(self, sid, head, ended)
        if not self.streams:  # the connection is busy: no idle deadline (see _closed)
            self.client.disarm()
        self.streams[sid] = stream
        stream.start(self.nursery)

    def nursery_start(self, fn: Callable[..., Awaitable[object]], *args: object) -> bool:
        """Run ``fn(*args)`` in a task of this connection (a stream leaving the reactor);
        False when the connection is ending (no task can start)."""
        if self.nursery is None:
            return False
        try:
            self.nursery.start_soon(fn, *args)
        except RuntimeError:  # the nursery is closed: the connection is over
            return False
        return True

    def stream_done(self, stream: H2Stream) -> None:
        self._closed(stream)
        self.kick()
        self._end_if_done()

    def _closed(self, stream: H2Stream) -> None:
        """A stream is over: forget it, give back the window of the DATA it did not
        take, and once the connection has no stream, its idle deadline runs again."""
        if self.streams.pop(stream.id, None) is None:
            return
        if not stream.ended:
            # Answered before the client finished its request (413, an error, a backend
            # that answered early): NO_ERROR tells it to stop sending (RFC 9113 8.1), and
            # the stream stops counting against the concurrent-stream limit.
            self.reset_stream(stream.id, NO_ERROR)
        if stream.data:  # (the connection window, mostly)
            self.consumed(stream.id, sum(n for _, n in stream.data))
            stream.data.clear()
        if not self.streams:
            # While streams are open, each has its own deadlines, and a stalled write
            # ends the connection (_writer): the idle deadline is for a quiet connection.
            self.client.arm(self.keepalive, "idle")

    def _end_if_done(self) -> None:
        if self.closing and not self.streams and self.nursery is not None:
            self.nursery.cancel_scope.cancel()  # (the reader waits for bytes: stop it)

    # --- writing ---------------------------------------------------------------------

    async def flush(self) -> None:
        """Write what the protocol queued; one writer at a time, in order.

        Only tasks that no stream reset can cancel call it (the writer, the reader, the
        start and end of the connection): a write cut off half-way over TLS must be
        retried with the same bytes, and a stream task's scope can be cancelled at
        any time (RST_STREAM). Streams ``kick`` the writer instead.
        """
        async with self.send_lock:
            data = self.h2.data_to_send()
            if data:
                self.writing = True
                sent = self.client.send_nowait(data)
                if sent < len(data):
                    # A client that does not read: the connection ends after body_timeout,
                    # whatever its streams do (nginx's send_timeout). (A scope only here:
                    # most writes fit the socket buffer at once.)
                    with trio.move_on_after(self.proxy.config.body_timeout) as bounded:
                        await self.client.send_rest(data, sent)
                    if bounded.cancelled_caught:
                        raise ClientTimeout("response")
                self.writing = False
                # The connection's deadline is one of inactivity both ways, as HAProxy's
                # `timeout client`: a stream whose response still flows keeps it open,
                # one that stops (or a client that does not read) does not.
                self.client.touch()

    def kick(self) -> None:
        """The protocol has bytes to send: the writer sends them."""
        self.writer.kick()

    async def _writer(self) -> None:
        try:
            await self.writer.run()
        except (ClientClosed, ClientTimeout):
            # The client is gone or stopped reading: the connection is over.
            if self.nursery is not None:
                self.nursery.cancel_scope.cancel()

    async def send_data(self, stream: H2Stream, data: bytes) -> None:
        """Send a response body's bytes within the client's flow-control windows.

        Raises:
          ClientTimeout: the client gave no window, or did not read, for the stream's
            timeout. ClientClosed: the connection broke.
        """
        if not await self.writer.send_data(stream.id, data, stream.timeout):
            if self.writer.dead:
                raise ClientClosed("connection lost")
            raise ClientTimeout("response")  # the client stopped reading

    def consumed(self, stream_id: int, flowed: int) -> None:
        """Request DATA went on to the backend: the client may send as much again."""
        if flowed:
            self.h2.acknowledge_received_data(flowed, stream_id)
            self.kick()

    def answer_error(self, stream_id: int, status: int) -> None:
        body = b"%d %s\n" % (status, REASONS.get(status, b"Error"))
        self.proxy.count(status)
        try:
            self.h2.send_headers(stream_id, [
                (b":status", b"%d" % status), (b"content-type", b"text/plain"),
                (b"content-length", b"%d" % len(body))])  # fmt: skip
            self.h2.send_data(stream_id, body, end_stream=True)
        except H2Error:
            self.reset_stream(stream_id)
        self.kick()

    def reset_stream(self, stream_id: int, code: int = INTERNAL_ERROR) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except H2Error:
            pass  # (reset by the client, or closed already)

    def drain(self) -> None:
        """GOAWAY with the last stream id; streams in flight finish, then it closes.
        (Queued after the server preface, which ``serve`` queued before the nursery,
        and before any REFUSED_STREAM for a stream opened after it: clients retry a
        stream above the GOAWAY's last id.)"""
        if self.closing or self.nursery is None:
            self.closing = True
            return
        self.closing = True
        self.last_stream = self.h2.highest_inbound_stream_id
        self.h2.goaway(self.last_stream)
        self.kick()
        self._end_if_done()


class Budget:
    """How many of something a client may do per second (counted per whole second)."""

    __slots__ = ("limit", "spent", "start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0
        self.start = 0.0

    def spend(self, now: float) -> bool:
        """Count one; False once more than ``limit`` came within the current second."""
        if now - self.start >= 1.0:
            self.start = now
            self.spent = 0
        self.spent += 1
        return self.spent <= self.limit
