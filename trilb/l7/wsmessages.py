"""The message-level WebSocket relay: both sides parsed, whole messages forwarded.

Used instead of the raw Tunnel (l7/wsrelay.py) when something needs messages: a
``max_message_size``, or a plugin's message phase (which may change or drop each
message; a plugin that fails closes both sides with 1011). Each side has a wsproto
connection: trilb is the server of the client and the client of the backend. A
message is gathered whole (fragments joined, never more than the limit) and sent on
as one; a larger one is never forwarded: its sender gets Close 1009. wsproto checks
what RFC 6455 asks of a receiver, so a client's unmasked frame (1002) or a text
message that is not UTF-8 (1007) gets that Close too; the other side then gets 1001
(its peer went away). Pings and pongs pass through (but for the answers to trilb's
own pings); a Close passes through with its code and reason, as does its answer.

No extension is negotiated on this path (the handshake drops the client's offer):
compressed frames would have to be inflated to be measured.
"""

from __future__ import annotations

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)

from trilb.config.schema import WebSocket
from trilb.l7.phases import MessageFailed, run_message
from trilb.l7.stream import Peer
from trilb.l7.wsframes import TOO_BIG
from trilb.l7.wsrelay import PING_PAYLOAD, Relay, Way
from trilb.plugin.api import Context, WsMessage
from trilb.plugin.chains import Phase

# The largest message gathered for a plugin's message phase when the frontend sets no
# ``max_message_size``: a message is held whole in memory, so there is always a bound.
PLUGIN_MESSAGE_LIMIT = 16 * 1024 * 1024
# The Close code when a plugin fails on a message (RFC 6455 7.4.1: internal error).
INTERNAL_ERROR = 1011


class Messages(Relay):
    """A WebSocket relayed message by message."""

    def __init__(
        self,
        client: Peer,
        upstream: Peer,
        settings: WebSocket,
        plugins: tuple[Context, Phase, Phase] | None = None,
    ) -> None:
        super().__init__(client, upstream, settings)
        # trilb is the server to the client and a client to the backend.
        self.client_ws = Connection(ConnectionType.SERVER)
        self.upstream_ws = Connection(ConnectionType.CLIENT)
        self.limit = settings.max_message_size or PLUGIN_MESSAGE_LIMIT
        # The message phase: (the request's Context, the chain upwards, downwards).
        self.plugins = plugins

    def _sides(self, way: Way) -> tuple[Connection, Connection]:
        """(the parser of way's source, the writer towards its destination)."""
        if way is self.up:
            return self.client_ws, self.upstream_ws
        return self.upstream_ws, self.client_ws

    async def pump(self, way: Way, data: bytes) -> bool:
        parser, writer = self._sides(way)
        src, dst = way.src, way.dst
        parts: list[bytes | str] = []
        size = 0
        while True:
            if data and parser.state is not ConnectionState.CLOSED:
                parser.receive_data(data)
                out: list[bytes] = []
                for event in parser.events():
                    if isinstance(event, Message):
                        payload = event.data
                        # The limit is in bytes, as the frames carried them.
                        size += len(payload.encode() if isinstance(payload, str) else payload)
                        if size > self.limit:
                            self._refuse(way, TOO_BIG, "message too big")
                            break
                        parts.append(payload)
                        if event.message_finished:
                            message = _whole(event, parts)
                            parts, size = [], 0
                            whole: Event | None = message
                            if self.plugins is not None:
                                try:
                                    whole = self._through_plugins(way, message)
                                except MessageFailed as exc:
                                    self.why = str(exc)
                                    self.go_away(INTERNAL_ERROR, INTERNAL_ERROR)
                                    break
                            if whole is not None and writer.state is ConnectionState.OPEN:
                                out.append(writer.send(whole))  # (else: closing)
                    elif isinstance(event, CloseConnection):
                        if parser.state is ConnectionState.OPEN:  # (wsproto's parse failure)
                            self._refuse(way, event.code, event.reason or "")
                            break
                        if not self.closing:  # (else trilb's own Close goes instead)
                            out.append(_close(writer, event))
                    elif (
                        isinstance(event, Pong) and way is self.up and event.payload == PING_PAYLOAD
                    ):
                        pass  # the answer to trilb's ping
                    elif isinstance(event, (Ping, Pong)) and writer.state is ConnectionState.OPEN:
                        out.append(writer.send(event))
                if out:
                    await dst.send_all(b"".join(out))
                src.touch()
                dst.touch()
                self.moved = True
            if self.closing:
                await dst.send_all(_close(writer, CloseConnection(way.code)))
                return await self.after_close(way)
            if self.ping_due and way is self.down:
                self.ping_due = False
                if writer.state is ConnectionState.OPEN:
                    await dst.send_all(writer.send(Ping(PING_PAYLOAD)))
            received = await self.receive(way)
            if received is None:
                data = b""
                continue
            if not received:
                return self.source_ended(way)
            data = received

    def _through_plugins(self, way: Way, event: Event) -> Event | None:
        """The message phase on one message: what to forward, or None (dropped).

        Raises:
          MessageFailed: a plugin failed.
        """
        assert self.plugins is not None
        ctx, up, down = self.plugins
        assert isinstance(event, (TextMessage, BytesMessage))
        message = WsMessage(bytes(event.data) if isinstance(event.data, bytearray)
                            else event.data, way is self.up)  # fmt: skip
        result = run_message(up if way is self.up else down, ctx, message)
        if result is None:
            return None
        if result is message:
            return event
        if isinstance(result.data, str):
            return TextMessage(result.data)
        return BytesMessage(result.data)

    def _refuse(self, way: Way, code: int, reason: str) -> None:
        """``way``'s source broke a rule: it gets a Close with ``code``, the other side
        1001 (each from the way that writes to it)."""
        self.why = f"{code} {reason}"
        if way is self.up:
            self.go_away(to_client=code)
        else:
            self.go_away(to_upstream=code)

    def answered(self, way: Way) -> bool:
        parser = self._sides(way)[0]
        return parser.state is ConnectionState.CLOSED

    def heard(self, way: Way, data: bytes) -> None:
        parser = self._sides(way)[0]
        if parser.state is ConnectionState.CLOSED:
            return
        parser.receive_data(data)
        for _ in parser.events():
            pass


def _whole(event: Event, parts: list[bytes | str]) -> Event:
    if isinstance(event, TextMessage):
        return TextMessage("".join(parts))  # type: ignore[arg-type]
    return BytesMessage(b"".join(parts))  # type: ignore[arg-type]


def _close(writer: Connection, event: CloseConnection) -> bytes:
    """A Close towards ``writer``'s peer, if one may still go (not after its own)."""
    if writer.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
        return writer.send(CloseConnection(event.code, event.reason))
    return b""
