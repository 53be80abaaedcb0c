"""The raw WebSocket relay between two plain sockets, driven by the worker's reactor.

What l7/wsrelay.py's Tunnel does with two trio tasks, done in reactor callbacks: a trio
wait costs about 10 µs (l4/reactor.py), and the task relay spent two per message, a
third of its CPU. Each direction reads its source until the socket is drained (a short
read, or EAGAIN), follows frame headers (l7/wsframes.py), and writes to its
destination; what the destination does not take waits for its next write edge, and
the source is not read meanwhile (backpressure). trilb's own frames (a Ping, the Close
1001) go at frame boundaries with nothing pending, exactly as in the Tunnel; the
deadlines are the two Streams' (idle, then the close handshake's). The handler task
that made the upgrade only waits for the end, then the sockets go back to their owners
to be closed. TLS sockets keep the task relay: OpenSSL reads and writes are not edges.
"""

from __future__ import annotations

import logging
import select
import ssl
from typing import TYPE_CHECKING

import trio

from trilb.config.schema import WebSocket
from trilb.l7.stream import RECV_SIZE, Stream
from trilb.l7.wsframes import GOING_AWAY, PING, FrameWalker, close_frame, frame
from trilb.l7.wsrelay import CLOSE_TIMEOUT, PING_PAYLOAD

if TYPE_CHECKING:
    from trilb.l7.wsrelay import Tunnels

log = logging.getLogger(__name__)

_ERRORS = (OSError, ssl.SSLError)
_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
# The peer's FIN may come with its last bytes and bring no later edge: read to the end.
_HUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR


class _Way:
    """One direction: bytes from ``src`` to ``dst``."""

    __slots__ = ("closed", "dst", "eof", "masked", "pending", "src", "walker")

    def __init__(self, src: Stream, dst: Stream, masked: bool) -> None:
        self.src = src
        self.dst = dst
        self.masked = masked  # frames trilb writes to dst are masked (dst: a server)
        self.walker = FrameWalker()
        self.pending: memoryview | None = None  # bytes dst did not take yet
        self.eof = False  # src ended
        self.closed = False  # trilb's Close went to dst: nothing more is relayed


class ReactorTunnel:
    """A WebSocket after its handshake, frames relayed as bytes from reactor callbacks."""

    def __init__(self, client: Stream, upstream: Stream, settings: WebSocket) -> None:
        assert client.reactor is not None, "the client socket is the reactor's"
        self.reactor = client.reactor
        self.settings = settings
        self.client = client
        self.upstream = upstream
        self.up = _Way(client, upstream, masked=True)
        self.down = _Way(upstream, client, masked=False)
        self.closing = False
        self.ping_due = False
        self.moved = False
        self.why = ""
        self._done = trio.Event()

    async def run(self, to_upstream: bytes, to_client: bytes, tunnels: Tunnels) -> None:
        """Relay until either side ends; arguments as Relay.run's."""
        reactor, client, upstream = self.reactor, self.client, self.upstream
        client_callback = reactor.callbacks[client.fd]
        reactor.callbacks[client.fd] = self._on_client
        if upstream.reactor is None:
            upstream.reactor = reactor
            reactor.watch(upstream.fd, self._on_upstream)
        else:
            reactor.callbacks[upstream.fd] = self._on_upstream
        for stream in (client, upstream):
            stream.timer.on_expire = self._expired
            stream.arm(self.settings.idle_timeout, "websocket idle")
        tunnels.live.add(self)
        try:
            if tunnels.draining:
                self.go_away()
            # Bytes that came with the handshake, then what the sockets hold: their edges
            # were spent while the task had them.
            for way, first in ((self.up, to_upstream), (self.down, to_client)):
                if first and not self._done.is_set():
                    self._relay(way, first)
                self._pump(way)
            interval = self.settings.ping_interval
            if interval:  # (timed here: the sweeper's deadlines are only as fine as its tick)
                while not self._done.is_set():
                    with trio.move_on_after(interval):
                        await self._done.wait()
                    self._ping()
            await self._done.wait()
        finally:
            tunnels.live.discard(self)
            log.debug("websocket ended: %s", self.why or "closed")
            if client.fd in reactor.callbacks:
                reactor.callbacks[client.fd] = client_callback
            if upstream.fd in reactor.callbacks:
                reactor.callbacks[upstream.fd] = upstream.on_idle_event
            for stream in (client, upstream):
                stream.disarm()
                stream.timer.on_expire = stream.wake

    # --- events ----------------------------------------------------------------------

    def _on_client(self, events: int) -> None:
        self._on_event(self.up, self.down, events)

    def _on_upstream(self, events: int) -> None:
        self._on_event(self.down, self.up, events)

    def _on_event(self, reading: _Way, writing: _Way, events: int) -> None:
        """``reading`` has this socket as its source, ``writing`` as its destination."""
        if self._done.is_set():
            return
        if events & select.EPOLLERR:  # a reset: nothing more to relay either way
            self._finish("connection reset")
            return
        try:
            if events & _OUT and writing.pending is not None and self._flush(writing):
                self._pump(writing)  # its source waited for room here
            if events & _IN:
                self._pump(reading, events & _HUP)
        except Exception:
            log.exception("websocket relay failed")
            self._finish("bug")

    # --- moving bytes ----------------------------------------------------------------

    def _pump(self, way: _Way, hup: int = 1) -> None:
        """Read ``way``'s source until drained (or its destination is full); ``hup``:
        the peer may have closed, so a short read does not mean drained."""
        src = way.src.sock
        while not self._done.is_set() and way.pending is None and not way.eof:
            try:
                data = src.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except _ERRORS as exc:
                self._finish(str(exc))
                return
            if not data:
                self._ended(way)
                return
            way.src.took(len(data))
            self._relay(way, data)
            if len(data) < RECV_SIZE and not hup:
                break  # drained: the next bytes bring a new edge
        self._own_frames(way)

    def _relay(self, way: _Way, data: bytes) -> None:
        walker = way.walker
        walker.feed(data)
        if way.closed:  # after trilb's Close: only looking for the answering one
            if walker.saw_close and way is self.up:
                self._finish("closed")
            return
        self.moved = True
        self.client.touch()
        self.upstream.touch()
        self._send(way, data)

    def _send(self, way: _Way, data: bytes | memoryview) -> None:
        try:
            sent = way.dst.sock.send(data)
            way.dst.gave(sent)
        except BlockingIOError:
            sent = 0
        except _ERRORS as exc:
            self._finish(str(exc))
            return
        if sent < len(data):
            way.pending = memoryview(data)[sent:]

    def _flush(self, way: _Way) -> bool:
        """Send what waited; True once nothing does."""
        pending = way.pending
        assert pending is not None
        way.pending = None
        self._send(way, pending)
        if way.pending is None:
            self._own_frames(way)
            return True
        return False

    def _own_frames(self, way: _Way) -> None:
        """Write trilb's frame on ``way`` if one is due and the way is between frames."""
        if (
            self._done.is_set()
            or way.pending is not None
            or way.closed
            or not way.walker.at_boundary
        ):
            return
        if self.closing:
            way.closed = True
            if not way.walker.saw_close:  # (else the peer's Close went this way already)
                self._send(way, close_frame(GOING_AWAY, way.masked))
            if way is self.up:  # the client's answering Close ends it, or the timeout
                self.client.arm(CLOSE_TIMEOUT, "websocket close")
            elif self.up.eof:
                self._finish("closed")
        elif self.ping_due and way is self.down and not way.walker.saw_close:
            self.ping_due = False
            self._send(way, frame(PING, PING_PAYLOAD, masked=False))

    def _ended(self, way: _Way) -> None:
        """``way``'s source ended: the backend's end ends the relay; the client's may be
        a half-close, and the backend gets CLOSE_TIMEOUT to send its answering Close."""
        way.eof = True
        if way is self.down or self.down.eof or self.down.closed:
            self._finish("closed")
            return
        self.upstream.arm(CLOSE_TIMEOUT, "websocket close")

    # --- trilb's own doings -----------------------------------------------------------

    def go_away(self) -> None:
        """trilb ends the connection: Close 1001 both ways, at frame boundaries."""
        if self.closing or self._done.is_set():
            return
        self.closing = True
        self._own_frames(self.up)
        self._own_frames(self.down)

    def _expired(self) -> None:
        if self.closing:
            self._finish("close timed out")
        else:
            self.why = "idle"
            self.go_away()

    def _ping(self) -> None:
        """A ping interval passed: ping the client if nothing moved meanwhile."""
        if self._done.is_set() or self.closing:
            return
        if not self.moved:
            self.ping_due = True
            self._own_frames(self.down)
        self.moved = False

    def _finish(self, why: str) -> None:
        self.why = self.why or why
        self._done.set()
