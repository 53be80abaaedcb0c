"""Relaying a message body between two streams, in the framing its head declared.

Owns moving body bytes: a known length is relayed raw (never through a parser), a
chunked body is relayed exactly as framed after ChunkedReader has checked each byte,
a close-delimited response until the backend's end of stream (chunked for an HTTP/1.1
client). Returns what followed the body (the next pipelined message). It does not decide
framing (l7/http1.py) and does not answer errors (l7/proxy.py).
"""

from __future__ import annotations

from trilb.errors import ProtocolError
from trilb.l7.http1 import ChunkedReader
from trilb.l7.stream import Peer


async def relay_length(src: Peer, dst: Peer, length: int, first: bytes) -> bytes:
    """Relay ``length`` bytes, starting with those already read (``first``).

    Returns:
      The bytes of ``first`` beyond the body (a pipelined next message).
    """
    if len(first) >= length:
        if length:
            await dst.send_all(first[:length] if len(first) > length else first)
        return first[length:]
    if first:
        await dst.send_all(first)
    left = length - len(first)
    while left:
        data = await src.recv(min(left, 65536))
        if not data:
            raise _truncated(src)
        src.touch()
        await dst.send_all(data)
        dst.touch()
        left -= len(data)
    return b""


async def relay_chunked(
    src: Peer, dst: Peer, first: bytes, response: bool, limit: int = 0, dechunk: bool = False
) -> bytes:
    """Relay a chunked body as it was framed, checked byte by byte.

    Args:
      limit: for a request, the most body bytes (framing included) allowed; 0: none.
      dechunk: send only the chunks' data (to an HTTP/1.0 client, which cannot take
        chunked: its response is then delimited by the close).

    Returns:
      What followed the body's last chunk and trailers.

    Raises:
      ProtocolError: the chunk framing is invalid (status 400, or 502 for a response),
        or the request body passed ``limit`` (413).
    """
    reader = ChunkedReader(response=response)
    data = first
    total = 0
    while True:
        if data:
            checked = reader.feed_payload(data) if dechunk else reader.feed(data)
            total += len(checked)
            if limit and total > limit:
                raise ProtocolError(413, f"chunked request body over {limit} bytes")
            if checked:
                await dst.send_all(checked)
                dst.touch()
            if reader.done:
                return reader.leftover
        data = await src.recv()
        if not data:
            raise _truncated(src)
        src.touch()


async def relay_until_close(src: Peer, dst: Peer, first: bytes, chunked: bool) -> None:
    """Relay a close-delimited response body until the backend closes.

    ``chunked``: frame it as chunks for the client (each read one chunk, then the last
    chunk), so that the client sees where it ends without a close.
    """
    data = first
    while True:
        if data:
            await dst.send_all(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            dst.touch()
        data = await src.recv()
        if not data:
            break
        src.touch()
    if chunked:
        await dst.send_all(b"0\r\n\r\n")


def _truncated(src: Peer) -> ProtocolError:
    if src.upstream:
        return ProtocolError(502, f"server {src.name} closed the connection inside a body")
    return ProtocolError(400, "the client closed the connection inside the request body")
