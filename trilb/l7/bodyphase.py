"""A message body through the plugins' body phases, between two streams.

Owns what the plain relays of l7/body.py cannot do: give the body to plugins in pieces
(framing removed), forward what they return, and frame that anew. The first call gets
the chain's buffer's worth (or the whole body if it is shorter), read before anything
is forwarded, so that a request phase can answer before the backend is even connected.
Its outcome decides the framing forwarded (``adapt``): a body that ended there goes
with the length of what the phases made of it (a chunked one stays chunked, keeping its
trailers); a longer one is streamed in its own framing, and a Content-Length it had
binds the phases to return as many bytes as they got.
"""

from __future__ import annotations

from trilb.errors import ProtocolError
from trilb.l7.http1 import ChunkedReader
from trilb.l7.phases import run_body
from trilb.l7.stream import Peer
from trilb.messages import Framing, RequestHead, ResponseHead
from trilb.plugin.api import Context
from trilb.plugin.chains import Phase


class BodyPass:
    """One body, read from its source and passed through a body phase."""

    __slots__ = (
        "buffer",
        "ctx",
        "ended",
        "framing",
        "left",
        "leftover",
        "limit",
        "out_length",
        "phase",
        "reader",
        "request",
        "seen",
        "sent",
    )  # fmt: skip

    def __init__(
        self,
        phase: Phase,
        ctx: Context,
        buffer: int,
        framing: Framing,
        length: int | None,
        request: bool,
        limit: int = 0,
    ) -> None:
        self.phase = phase
        self.ctx = ctx
        self.buffer = buffer
        self.framing = framing
        self.request = request
        self.reader = ChunkedReader(response=not request) if framing is Framing.CHUNKED else None
        self.left = length or 0  # Framing.LENGTH: body bytes still to come
        self.limit = limit  # a chunked request's most body bytes (0: none)
        self.seen = 0
        self.ended = framing is Framing.LENGTH and not self.left
        self.leftover = b""  # what followed the body (a pipelined next message)
        self.out_length: int | None = None  # the length forwarded, when there is one
        self.sent = 0

    def _take(self, data: bytes) -> bytes:
        """The body bytes in ``data`` (what follows the body is kept as ``leftover``)."""
        if self.reader is not None:
            payload = self.reader.feed_payload(data)
            if self.reader.done:
                self.ended = True
                self.leftover = self.reader.leftover
        elif self.framing is Framing.LENGTH:
            payload = data[: self.left] if len(data) > self.left else data
            self.left -= len(payload)
            if not self.left:
                self.ended = True
                self.leftover = data[len(payload) :]
        else:
            payload = data
        self.seen += len(payload)
        if self.limit and self.seen > self.limit:
            raise ProtocolError(413, f"request body over {self.limit} bytes")
        return payload

    async def _read(self, src: Peer) -> bytes:
        data = await src.recv()
        if not data:
            if self.framing is Framing.CLOSE:  # (the end of a close-delimited response)
                self.ended = True
                return b""
            if src.upstream:
                raise ProtocolError(502, f"server {src.name} closed the connection inside a body")
            raise ProtocolError(400, "the client closed the connection inside the request body")
        src.touch()
        return self._take(data)

    async def start(self, src: Peer, first: bytes) -> bytes:
        """Read the first piece (``first``: bytes already received) and run the phase
        on it; returns what goes on in its place.

        Raises:
          PluginReply: a request phase answered, or a plugin failed.
          ProtocolError: the body is truncated or badly framed (400/502) or too big (413).
        """
        pieces = [self._take(first)] if first else []
        size = len(pieces[0]) if pieces else 0
        while not self.ended and (size < self.buffer or not size):
            piece = await self._read(src)
            pieces.append(piece)
            size += len(piece)
        out = run_body(self.phase, self.ctx, b"".join(pieces), self.ended, self.request)
        if self.ended:
            self.out_length = len(out)
        elif self.framing is Framing.LENGTH:
            self.out_length = self.left + size  # the whole declared length
        self.sent = len(out)
        self._check()
        return out

    def adapt(self, head: RequestHead | ResponseHead) -> None:
        """Make ``head`` declare the framing its body is forwarded with (after ``start``)."""
        if self.framing is Framing.CHUNKED:
            return  # re-framed chunk by chunk: any length goes
        if self.out_length is not None and (
            head.framing is not Framing.LENGTH or head.content_length != self.out_length
        ):
            head.framing = Framing.LENGTH
            head.content_length = self.out_length
            head.raw = b""  # (rebuilt from the fields, with the new length)

    async def pump(self, src: Peer, dst: Peer, chunked: bool) -> None:
        """Pass the rest of the body (after ``start``) to ``dst``; ``chunked``: frame
        each piece as a chunk, and end with the last chunk (and the trailers).

        Raises:
          PluginReply: a request phase answered, or a plugin failed.
          ProtocolError: as ``start``; or 500 when the phases broke the body's length.
        """
        if self.ended:  # (``frame`` ended it)
            return
        while not self.ended:
            piece = await self._read(src)
            out = run_body(self.phase, self.ctx, piece, self.ended, self.request)
            self.sent += len(out)
            self._check()
            if out:
                await dst.send_all(b"%x\r\n%s\r\n" % (len(out), out) if chunked else out)
                dst.touch()
        if chunked:
            await dst.send_all(self.last_chunk())

    def frame(self, out: bytes, chunked: bool) -> bytes:
        """The first piece as it goes on the wire (after the head)."""
        if not chunked:
            return out
        data = b"%x\r\n%s\r\n" % (len(out), out) if out else b""
        return data + self.last_chunk() if self.ended else data

    def last_chunk(self) -> bytes:
        trailers = self.reader.trailers.items if self.reader is not None else ()
        return b"0\r\n" + b"".join(b"%s: %s\r\n" % f for f in trailers) + b"\r\n"

    def _check(self) -> None:
        n = self.out_length
        if n is not None and (self.sent > n or (self.ended and self.sent != n)):
            raise ProtocolError(500, f"the body phases made {self.sent} bytes of a body "
                                f"whose length was declared as {n}")  # fmt: skip
