"""A WebSocket connection after its handshake: both directions until one side ends.

Theory of operation. Two trio tasks, one per direction, each reading one side and
writing the other. trilb must sometimes speak on the connection itself: a Ping to a
silent client (``ping_interval``), and a Close when it ends the connection (1001 when
the worker drains for a reload or shutdown, or ``idle_timeout`` passed with no byte
either way). A direction waiting for its source is interrupted for that by the source's
``wake`` (the deadline mechanism of l7/stream.py), writes trilb's frame, and either goes
on or, after a Close, drops what its source still sends until that side's own Close
(RFC 6455 7.1: trilb is the server of one side and the client of the other). Whatever
ends first ends both: a WebSocket lives as long as both its connections.

Relay holds that common frame; two kinds differ in how a direction moves its data:

- Tunnel (here), the fast default: bytes as they come, nothing decoded but frame
  headers (l7/wsframes.py), so that trilb knows where it may put a frame of its own;
- Messages (l7/wsmessages.py): both sides parsed by wsproto, when something needs
  whole messages (``max_message_size``, later plugins).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio
from wsproto.utilities import LocalProtocolError

from trilb.config.schema import WebSocket
from trilb.errors import ClientClosed, ClientTimeout, UpstreamError
from trilb.l7.stream import Peer, Stream
from trilb.l7.wsframes import GOING_AWAY, PING, FrameWalker, close_frame, frame

log = logging.getLogger(__name__)

# After trilb's Close, how long the peers get to answer with theirs.
CLOSE_TIMEOUT = 2.0
# What trilb's pings carry: a Pong with it answers trilb, not the backend.
PING_PAYLOAD = b"trilb"
STREAM_ERRORS = (ClientClosed, ClientTimeout, UpstreamError)


class Way:
    """One direction of a relayed WebSocket."""

    __slots__ = ("code", "done", "dst", "masked", "read", "receiving", "src", "stalled",
                 "walker")  # fmt: skip

    def __init__(self, src: Peer, dst: Peer, masked: bool) -> None:
        self.src = src
        self.dst = dst
        # The next message is rarely there yet when the last one was relayed: a plain
        # socket waits first (no recv that fails with EAGAIN, and no exception, per
        # message). Not over TLS: OpenSSL may hold bytes the socket no longer shows.
        self.read: Callable[[], Awaitable[bytes]] = src.recv
        if isinstance(src, Stream) and not src.tls:
            self.read = src.recv_later
        self.masked = masked  # frames trilb writes to dst are masked (dst: a server)
        self.walker = FrameWalker()
        self.receiving = False  # waiting for src: a wake there is ours to interpret
        self.done = False  # it sent trilb's Close and writes no more
        self.stalled = False  # it got its CLOSE_TIMEOUT to reach a frame boundary
        # The code of the Close trilb sends to dst when it ends the connection. Each way
        # writes to its own dst only: two tasks never write to one socket.
        self.code = GOING_AWAY


class Relay:
    """What both kinds of relay share: the two tasks, deadlines, trilb's own frames."""

    def __init__(self, client: Peer, upstream: Peer, settings: WebSocket) -> None:
        self.settings = settings
        self.up = Way(client, upstream, masked=True)
        self.down = Way(upstream, client, masked=False)
        # trilb ends the connection: each way sends its Close as soon as it may.
        self.closing = False
        self.ping_due = False
        # Bytes moved since the pinger last looked: no ping is needed then.
        self.moved = False
        self._scope: trio.CancelScope | None = None
        self.running = 0  # directions still moving
        self.why = ""

    async def run(self, to_upstream: bytes, to_client: bytes, tunnels: Tunnels) -> None:
        """Relay until either side ends; ``to_upstream``/``to_client``: bytes already
        received for the other side (what followed the handshake)."""
        idle = self.settings.idle_timeout
        self.up.src.arm(idle, "websocket idle")
        self.down.src.arm(idle, "websocket idle")
        tunnels.live.add(self)
        if tunnels.draining:
            self.go_away()
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._direction, self.down, to_client)
                if self.settings.ping_interval:
                    nursery.start_soon(self._pinger, self.settings.ping_interval)
                await self._direction(self.up, to_upstream)
        finally:
            tunnels.live.discard(self)
            self.up.src.disarm()
            self.down.src.disarm()
            log.debug("websocket ended: %s", self.why or "closed")

    def go_away(self, to_client: int = GOING_AWAY, to_upstream: int = GOING_AWAY) -> None:
        """trilb ends the connection: a Close each way, with these codes."""
        if not self.closing:
            self.closing = True
            self.down.code = to_client
            self.up.code = to_upstream
            self.poke(self.up)
            self.poke(self.down)

    def poke(self, way: Way) -> None:
        """Interrupt ``way``'s wait for its source, so that it writes a frame of trilb's.
        Only while the other way is not writing to that socket: a wake ends every wait on
        it. (A busy other way pokes this one once it is done.)"""
        other = self.down if way is self.up else self.up
        if way.receiving and (other.receiving or other.done):
            way.src.wake()

    async def _direction(self, way: Way, data: bytes) -> None:
        end = True
        self.running += 1
        try:
            end = await self.pump(way, data)
        except (*STREAM_ERRORS, LocalProtocolError) as exc:
            # (LocalProtocolError: wsproto refused a frame in a closing state; a race of
            # the two sides' Closes on the message path, which ends the relay as well.)
            self.why = self.why or str(exc)
        finally:
            self.running -= 1
            if end or not self.running:  # (the last way out: the pinger must not hold on)
                assert self._scope is not None
                self._scope.cancel()

    async def pump(self, way: Way, data: bytes) -> bool:
        """Move ``way``'s data until its source ends or trilb closes; returns whether the
        relay ends with it."""
        raise NotImplementedError

    async def receive(self, way: Way) -> bytes | None:
        """The next bytes of ``way``'s source (b"" at its end), or None after a wake:
        trilb has a frame to write (and an idle deadline starts trilb's Close)."""
        way.receiving = True
        try:
            return await way.read()
        except (ClientTimeout, UpstreamError) as exc:
            if isinstance(exc, UpstreamError) and exc.kind != "timeout":
                raise
            if self.closing:
                # trilb is closing and this way is stalled (mid-frame, or waiting for an
                # answer): CLOSE_TIMEOUT more, once; then the relay ends. (Returning at
                # once again would spin: an expired deadline raises before any wait.)
                if way.stalled:
                    raise
                way.stalled = True
                way.src.arm(CLOSE_TIMEOUT, "websocket close")
            elif not self.ping_due:  # the idle deadline
                self.why = "idle"
                self.go_away()
            return None
        finally:
            way.receiving = False

    def source_ended(self, way: Way) -> bool:
        """``way``'s source ended; returns whether the relay ends now.

        The backend's end ends it. The client's may be a half-close (an HTTP/2 client
        ends its stream after its Close): the backend's answering Close must still reach
        it, so the backend gets CLOSE_TIMEOUT to answer and end.
        """
        if way is self.down or self.down.done:
            return True
        way.done = True
        self.down.src.arm(CLOSE_TIMEOUT, "websocket close")
        return False

    async def after_close(self, way: Way) -> bool:
        """trilb's Close went out on ``way``; returns whether the relay ends now.

        Towards the client that is all: its answer comes on the other way. Towards the
        backend, the client's bytes are dropped until its own Close (or its end, or
        CLOSE_TIMEOUT): then the relay ends.
        """
        # This way writes no more: the other one's wait may be woken now (it may have
        # been left waiting while this way wrote).
        way.done = True
        other = self.up if way is self.down else self.down
        if other.receiving:
            other.src.wake()
        if way is self.down:
            return False
        way.src.arm(CLOSE_TIMEOUT, "websocket close")
        while not self.answered(way):
            data = await way.src.recv()
            if not data:
                break
            self.heard(way, data)
        return True

    def answered(self, way: Way) -> bool:
        """Whether ``way``'s source has sent its Close."""
        return way.walker.saw_close

    def heard(self, way: Way, data: bytes) -> None:
        """Bytes from ``way``'s source after trilb's Close: looked at, not relayed."""
        way.walker.feed(data)

    async def _pinger(self, interval: float) -> None:
        while not self.closing:
            await trio.sleep(interval)
            if not self.moved:
                self.ping_due = True
                self.poke(self.down)
            self.moved = False


class Live(Protocol):
    """A relayed WebSocket, as the drain sees it."""

    def go_away(self) -> None:
        """Close it with 1001 (at frame boundaries)."""


class Tunnels:
    """The WebSocket connections of one frontend in one worker, for the drain."""

    def __init__(self) -> None:
        self.live: set[Live] = set()
        self.draining = False

    def drain(self) -> None:
        """Close every WebSocket with 1001, now and as new ones open."""
        self.draining = True
        for relay in list(self.live):
            relay.go_away()


class Tunnel(Relay):
    """Frames relayed as bytes, followed by their headers only."""

    async def pump(self, way: Way, data: bytes) -> bool:
        src, dst, walker = way.src, way.dst, way.walker
        while True:
            if data:
                walker.feed(data)
                await dst.send_all(data)
                src.touch()
                dst.touch()
                self.moved = True
            if walker.at_boundary:  # trilb may write a frame of its own
                if self.closing:
                    if not walker.saw_close:  # (else the peer's Close went this way already)
                        await dst.send_all(close_frame(way.code, way.masked))
                    return await self.after_close(way)
                if self.ping_due and way is self.down and not walker.saw_close:
                    self.ping_due = False
                    await dst.send_all(frame(PING, PING_PAYLOAD, masked=False))
            received = await self.receive(way)
            if received is None:
                data = b""
                continue
            if not received:
                return self.source_ended(way)
            data = received
