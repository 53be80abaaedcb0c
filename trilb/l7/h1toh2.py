"""An HTTP/1.1 client's exchange with an HTTP/2 backend (``protocol = "h2"``).

Owns the translation both ways for one request: the request head becomes a header block
(l7/h2upstream.request_fields), its body (Content-Length or chunked, checked as for
HTTP/1.1) goes as DATA; the response's header block becomes an HTTP/1.1 head whose body
keeps the backend's content-length when it gave one and is chunked otherwise (HTTP/1.0
clients: delimited by the close), with the backend's trailers as chunked trailers. The
request body is sent before the response is read (an HTTP/1.1 client does not stream both
ways); it runs in the connection's task (l7/proxy.py hands it over), not in the reactor.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from trilb.errors import ExchangeAborted, ProtocolError, UpstreamError
from trilb.l7.h2upstream import Exchange, request_fields
from trilb.l7.http1 import FORBIDDEN_TRAILERS, ChunkedReader, serialize_response
from trilb.messages import Framing, Headers, RequestHead, ResponseHead

if TYPE_CHECKING:
    from trilb.l7.proxy import HttpBackend, Proxy
    from trilb.l7.stream import Stream

# Response fields HTTP/2 has no use for and HTTP/1.1 framing decides here.
_DROP = frozenset((b"content-length", b"transfer-encoding", b"connection", b"keep-alive"))


async def exchange_h2(
    proxy: Proxy, client: Stream, head: RequestHead, first: bytes, client_ip: bytes,
    backend: HttpBackend,
) -> tuple[bool, bytes]:  # fmt: skip
    """Proxy one HTTP/1.1 request to an HTTP/2 backend; returns what Proxy.exchange does.

    Raises:
      UpstreamError: no stream could be opened, or it broke before the response head.
      ProtocolError: the request body's framing is invalid (400).
      ExchangeAborted: the response broke off after its head went out.
    """
    pool = backend.h2
    assert pool is not None
    fields = request_fields(head, pool.scheme, client_ip, proxy.scheme)
    exchange = await backend.open_h2(head, fields, head.framing is Framing.NONE)
    try:
        rest = await _upload(proxy, client, head, first, exchange)
        response = await exchange.response(backend.config.response_timeout)
        keep = await _download(proxy, client, head, exchange, response)
    finally:
        exchange.cancel()
    return keep, rest


async def _upload(
    proxy: Proxy, client: Stream, head: RequestHead, first: bytes, exchange: Exchange
) -> bytes:
    """Send the request body as DATA; returns what followed it (a pipelined request)."""
    if head.framing is Framing.NONE:
        return first
    timeout = proxy.config.body_timeout
    client.arm(timeout, "body")
    try:
        if head.framing is Framing.LENGTH:
            left = head.content_length or 0
            data, rest = first[:left], first[left:]
            while True:
                if data:
                    await exchange.send(data, timeout)
                    left -= len(data)
                if not left:
                    break
                data = await client.recv(min(left, 65536))
                if not data:
                    raise ProtocolError(400, "the client closed the connection inside the body")
                client.touch()
        else:
            reader = ChunkedReader(response=False)
            data = first
            while True:
                if data:
                    payload = reader.feed_payload(data)
                    if payload:
                        await exchange.send(payload, timeout)
                    if reader.done:
                        rest = reader.leftover
                        break
                data = await client.recv()
                if not data:
                    raise ProtocolError(400, "the client closed the connection inside the body")
                client.touch()
        await exchange.end()
    finally:
        client.disarm()
    return rest


async def _download(
    proxy: Proxy, client: Stream, head: RequestHead, exchange: Exchange,
    fields: list[tuple[bytes, bytes]],
) -> bool:  # fmt: skip
    """Send the response to the client; True when the client connection stays open."""
    status = next((v for n, v in fields if n == b":status"), b"")
    if not status.isdigit():
        raise UpstreamError("invalid", "response without a valid :status", retryable=False)
    length = next((v for n, v in fields if n == b"content-length"), None)
    kept = [(n, v) for n, v in fields if n[:1] != b":" and n not in _DROP]
    bodiless = head.method == b"HEAD" or int(status) in (204, 304)
    http11 = head.version == b"1.1"
    if bodiless or length is not None:
        framing = Framing.NONE if bodiless else Framing.LENGTH
        kept.append((b"content-length", length if length is not None else b"0"))
    elif http11:
        framing = Framing.CHUNKED
        kept.append((b"transfer-encoding", b"chunked"))
    else:
        framing = Framing.CLOSE
    keep = head.keep_alive and framing is not Framing.CLOSE and not proxy.draining
    if not keep:
        kept.append((b"connection", b"close"))
    rhead = ResponseHead(int(status), _reason(int(status)), b"1.1", Headers(kept))
    await client.send_all(serialize_response(rhead, kept, b"1.1"))
    if bodiless:
        return keep
    timeout = proxy.config.body_timeout
    client.arm(timeout, "response")
    try:
        while data := await exchange.recv(timeout):
            await client.send_all(b"%x\r\n%s\r\n" % (len(data), data)
                                  if framing is Framing.CHUNKED else data)  # fmt: skip
            client.touch()
        if framing is Framing.CHUNKED:
            lines = [n + b": " + v + b"\r\n" for n, v in exchange.trailers or ()
                     if n not in FORBIDDEN_TRAILERS]  # fmt: skip
            await client.send_all(b"".join([b"0\r\n", *lines, b"\r\n"]))
    except UpstreamError as exc:
        raise ExchangeAborted(str(exc)) from exc
    finally:
        client.disarm()
    return keep


def _reason(status: int) -> bytes:
    """A reason phrase for an HTTP/1.1 status line (HTTP/2 carries none)."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
