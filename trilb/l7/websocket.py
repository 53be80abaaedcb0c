"""WebSocket proxying: the upgrade exchange, then the connection both ways until it ends.

Theory of operation. A client's upgrade request is checked (l7/wshandshake.py), routed
and forwarded like any request (l7/proxy.py's ``forward``: balancing, retries of a
failed connect, timeouts), with the upgrade fields put back that forwarding drops as
hop-by-hop. A backend that answers anything but 101 has its response passed through,
and HTTP goes on; a 101 must complete the handshake (else 502), is relayed to the
client, and from then on the two connections belong to a Tunnel until one side ends.

The Tunnel is the fast default: frames pass as bytes, two directions in two trio tasks,
with nothing decoded but frame headers (l7/wsframes.py), so that trilb knows where it
may put a frame of its own: a Ping to a silent client (``ping_interval``), a Close 1001
to both sides when trilb ends the connection (the worker drains for a reload or
shutdown, or ``idle_timeout`` passed with no byte either way). After its Close trilb
forwards nothing more in that direction and waits a short time for the answering Close
before it closes the sockets. When a side closes or fails, the other is closed too:
a WebSocket ends with both.

Parsing messages (l7/wsmessages.py) replaces the Tunnel when something needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import trio

from trilb.config.schema import WebSocket
from trilb.errors import ClientClosed, ClientTimeout, UpstreamError
from trilb.l7.proxy import Proxy
from trilb.l7.stream import Peer, Stream
from trilb.l7.wsframes import GOING_AWAY, PING, FrameWalker, close_frame, frame
from trilb.l7.wshandshake import UPGRADE_FIELDS, check_request, check_response, switching_wire
from trilb.messages import RequestHead

log = logging.getLogger(__name__)

# After trilb's Close, how long the peers get to answer theirs (RFC 6455 7.1.1: the
# server closes the TCP connection after the closing handshake; trilb is both ends).
CLOSE_TIMEOUT = 2.0
_STREAM_ERRORS = (ClientClosed, ClientTimeout, UpstreamError)


class Tunnels:
    """The WebSocket connections of one frontend in one worker, for the drain."""

    def __init__(self) -> None:
        self.live: set[Tunnel] = set()
        self.draining = False

    def drain(self) -> None:
        """Close every WebSocket with 1001, now and as new ones open."""
        self.draining = True
        for tunnel in list(self.live):
            tunnel.go_away()


async def proxy_websocket(
    proxy: Proxy, client: Stream, head: RequestHead, first: bytes, client_ip: bytes,
    tunnels: Tunnels,
) -> tuple[bool, bytes]:  # fmt: skip
    """Proxy an HTTP/1.1 WebSocket upgrade request; returns as Proxy.exchange does.

    Raises:
      ProtocolError: 400/426 for a bad handshake, 502 for a backend's bad 101.
      And what Proxy.exchange raises before the upgrade.
    """
    settings = proxy.config.websocket
    key = check_request(head)
    offered = b"sec-websocket-extensions" in head.headers
    upstream, slot, backend, rest, rhead, body = await proxy.forward(client, head, first, client_ip)
    if rhead.status != 101:  # refused: its answer goes to the client, HTTP goes on
        return await proxy.respond(client, upstream, slot, backend, head, rest, rhead, body)
    try:
        check_response(rhead, key, offered)
        await client.send_all(switching_wire(rhead))
        # The connection is the tunnel's now: it never goes back to the pool.
        tunnel = Tunnel(client, upstream, settings)
        await tunnel.run(rest, body, tunnels)
    finally:
        backend.pool.release(slot, upstream, False)
    return False, b""


def upgrade_fields(head: RequestHead) -> Iterable[tuple[bytes, bytes]]:
    """The fields forwarding drops that a WebSocket upgrade request must carry on."""
    return UPGRADE_FIELDS if head.upgrade == b"websocket" else ()


class _Way:
    """One direction of a tunnel."""

    __slots__ = ("done", "dst", "masked", "receiving", "src", "walker")

    def __init__(self, src: Peer, dst: Peer, masked: bool) -> None:
        self.src = src
        self.dst = dst
        self.masked = masked  # frames trilb writes to dst must be masked (dst: a server)
        self.walker = FrameWalker()
        self.receiving = False  # waiting for src: a wake there is ours to interpret
        self.done = False  # it sent its Close and reads no more


class Tunnel:
    """A WebSocket connection after its handshake, frames relayed as bytes."""

    def __init__(self, client: Peer, upstream: Peer, settings: WebSocket) -> None:
        self.client = client
        self.upstream = upstream
        self.settings = settings
        self.up = _Way(client, upstream, masked=True)
        self.down = _Way(upstream, client, masked=False)
        # trilb is ending the connection: each way sends its Close at the next boundary.
        self.closing = False
        self._ping_due = False
        # Bytes moved since the pinger last looked: no ping is needed then.
        self._moved = False
        self._scope: trio.CancelScope | None = None
        self.why = ""

    async def run(self, to_upstream: bytes, to_client: bytes, tunnels: Tunnels) -> None:
        """Relay until either side ends; ``to_upstream``/``to_client``: bytes already
        received for the other side (what followed the handshake)."""
        idle = self.settings.idle_timeout
        self.client.arm(idle, "websocket idle")
        self.upstream.arm(idle, "websocket idle")
        tunnels.live.add(self)
        if tunnels.draining:
            self.go_away()
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._pump, self.down, to_client)
                if self.settings.ping_interval:
                    nursery.start_soon(self._pinger, self.settings.ping_interval)
                await self._pump(self.up, to_upstream)
        finally:
            tunnels.live.discard(self)
            self.client.disarm()
            self.upstream.disarm()

    def go_away(self) -> None:
        """trilb ends the connection: Close 1001 both ways, at frame boundaries."""
        if not self.closing:
            self.closing = True
            self._poke(self.up)
            self._poke(self.down)

    def _poke(self, way: _Way) -> None:
        """Interrupt ``way``'s wait for its source, so that it writes a frame of trilb's.
        Only while the other way is not writing to that socket: a wake ends every wait on
        it. (A busy other way pokes this one once it is done.)"""
        other = self.down if way is self.up else self.up
        if way.receiving and (other.receiving or other.done):
            way.src.wake()

    async def _pump(self, way: _Way, data: bytes) -> None:
        src, dst, walker = way.src, way.dst, way.walker
        end = True
        try:
            while True:
                if data:
                    walker.feed(data)
                    await dst.send_all(data)
                    src.touch()
                    dst.touch()
                    self._moved = True
                if self.closing and walker.at_boundary:
                    end = await self._close_way(way)
                    return
                if self._ping_due and way is self.down and walker.at_boundary:
                    self._ping_due = False
                    await dst.send_all(frame(PING, b"trilb", masked=False))
                way.receiving = True
                try:
                    data = await src.recv()
                except (ClientTimeout, UpstreamError) as exc:
                    if isinstance(exc, UpstreamError) and exc.kind != "timeout":
                        raise
                    # A wake: go_away, a due ping, or the idle deadline (trilb ends it).
                    if not (self.closing or self._ping_due):
                        self.why = "idle"
                        self.go_away()
                    data = b""
                    continue
                finally:
                    way.receiving = False
                if not data:
                    return  # its end: the tunnel ends (the finally below)
        except _STREAM_ERRORS as exc:
            self.why = self.why or str(exc)
        finally:
            if end:
                assert self._scope is not None
                self._scope.cancel()

    async def _close_way(self, way: _Way) -> bool:
        """Send trilb's Close on ``way``; returns whether the tunnel ends with the way.

        Towards the client that is all: the client's answer comes on the other way.
        Towards the backend, what the client still sends is dropped until its own Close
        (or its end, or CLOSE_TIMEOUT): then the tunnel ends."""
        src, dst, walker = way.src, way.dst, way.walker
        await dst.send_all(close_frame(GOING_AWAY, way.masked))
        if way is self.down:
            way.done = True
            self._poke(self.up)  # it may have been left waiting while we wrote
            return False
        self._poke(self.down)
        src.arm(CLOSE_TIMEOUT, "websocket close")
        while not walker.saw_close:
            data = await src.recv()
            if not data:
                break
            walker.feed(data)
        return True

    async def _pinger(self, interval: float) -> None:
        while not self.closing:
            await trio.sleep(interval)
            if not self._moved:
                self._ping_due = True
                self._poke(self.down)
            self._moved = False
