"""WebSocket proxying: the upgrade exchange, then the relay of the connection.

A client's upgrade request is checked (l7/wshandshake.py), routed and forwarded like any
request (l7/proxy.py's ``forward``: balancing, retries of a failed connect, timeouts),
with the upgrade fields put back that forwarding drops as hop-by-hop. A backend that
answers anything but 101 has its response passed through, and HTTP goes on; a 101 must
complete the handshake (else 502), is relayed to the client, and from then on the two
connections belong to a relay (l7/wsrelay.py: frames as bytes; l7/wsmessages.py:
messages parsed) until one side ends. An HTTP/2 extended CONNECT (RFC 8441) takes the
same way from l7/h2stream.py, with the stream as the client side.
"""

from __future__ import annotations

import logging

from trilb.config.schema import WebSocket
from trilb.l7.proxy import Proxy
from trilb.l7.stream import Peer, Stream
from trilb.l7.wshandshake import check_request, check_response, switching_wire
from trilb.l7.wsmessages import Messages
from trilb.l7.wsreactor import ReactorTunnel
from trilb.l7.wsrelay import Relay, Tunnel, Tunnels
from trilb.messages import RequestHead

log = logging.getLogger(__name__)


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
    messages = proxy.wants_messages(head)
    if messages:  # no extension on this path: see l7/wsmessages.py
        head.headers.remove(b"sec-websocket-extensions")
    offered = b"sec-websocket-extensions" in head.headers
    upstream, slot, backend, rest, rhead, body = await proxy.forward(client, head, first, client_ip)
    if rhead.status != 101:  # refused: its answer goes to the client, HTTP goes on
        return await proxy.respond(client, upstream, slot, backend, head, rest, rhead, body)
    try:
        check_response(rhead, key, offered)
        await client.send_all(switching_wire(rhead))
        # The connection is the relay's now: it never goes back to the pool.
        if not messages and client.reactor is not None and not client.tls \
                and not upstream.tls:  # fmt: skip
            await ReactorTunnel(client, upstream, settings).run(rest, body, tunnels)
        else:
            await relay_for(client, upstream, settings, head, messages).run(rest, body, tunnels)
    finally:
        backend.pool.release(slot, upstream, False)
    return False, b""


def relay_for(
    client: Peer, upstream: Peer, settings: WebSocket, head: RequestHead, messages: bool
) -> Relay:
    """The relay a WebSocket gets: messages parsed when something needs them
    (``messages``: Proxy.wants_messages), else bytes."""
    if messages:
        run = head.plugins
        flow = run.flow if run is not None else None
        if run is not None and flow is not None and flow.ws_up:
            return Messages(client, upstream, settings, (run.ctx, flow.ws_up, flow.ws_down))
        return Messages(client, upstream, settings)
    return Tunnel(client, upstream, settings)
