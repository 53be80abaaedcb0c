"""An HTTP/2 request's header block as the RequestHead HTTP/1.1 will forward: its checks.

Owns RFC 9113's rules for a request header block (section 8.2: field names and values,
connection-specific fields; 8.3: pseudo-header fields) and its translation (``:authority``
becomes Host, split cookies are joined, section 8.2.3; a body without content-length is
framed chunked for the backend). trilb must look at every field anyway to build the
head, so the checks are made here, in that one pass (the h2 library's validation, used
before, walked the block five times: a fifth of a request's CPU when measured). A block
that breaks a rule is malformed (8.1.1): ProtocolError 400, and it never reaches a
backend. Pure functions; no I/O.
"""

from __future__ import annotations

import re
from typing import Final

from trilb.errors import ProtocolError
from trilb.l7.h1parse import HOST_CHARS, TCHAR, show
from trilb.messages import Framing, Headers, RequestHead

# RFC 9110 tchar without the uppercase letters: what an HTTP/2 field name is made of.
NAME_CHARS: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
# A value with CR, LF, NUL (8.2.1) or another control character but HTAB (as HTTP/1.1
# allows none: the backend would refuse it), or whitespace at either end.
BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\A[ \t]|[ \t]\Z")
# What a :path may not hold on its way into an HTTP/1.1 request line: whitespace and
# control characters would split or end the line; a fragment is never sent.
BAD_PATH: Final = re.compile(rb"[\x00-\x20\x7f#]")
# The pseudo-header fields of a request (8.3.1), and RFC 8441's :protocol (extended
# CONNECT, for WebSocket).
REQUEST_PSEUDO: Final = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
# Fields that only mean something on an HTTP/1.1 connection (8.2.2).
CONNECTION_SPECIFIC: Final = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade")
)


# Fields a trailer section may not carry: framing, routing, and what h2 itself frames.
NOT_IN_TRAILERS: Final = frozenset((b"content-length", b"host", b"te", b"trailer"))


def request_head(headers: list[tuple[bytes, bytes]], ended: bool) -> RequestHead:
    """The request an HTTP/2 stream's header block makes, as HTTP/1.1 will forward it.

    ``ended``: the block ended the stream (no body follows).

    Raises:
      ProtocolError: 400 for a malformed block; 501 for CONNECT (no tunnels) and an
        extended CONNECT for another protocol than websocket.
    """
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    length: bytes | None = None
    host: bytes | None = None
    for name, value in headers:
        if BAD_VALUE.search(value):
            raise ProtocolError(400, f"invalid value of header field {name!r}")
        if name[:1] == b":":
            if fields or cookies or host is not None:
                raise ProtocolError(400, f"pseudo-header {name!r} after a regular field")
            if name in pseudo:
                raise ProtocolError(400, f"pseudo-header {name!r} twice")
            if name not in REQUEST_PSEUDO:
                raise ProtocolError(400, f"pseudo-header {name!r} in a request")
            pseudo[name] = value
            continue
        if not name or name.translate(None, NAME_CHARS):
            raise ProtocolError(400, f"invalid header field name {name!r}")
        if name in CONNECTION_SPECIFIC:
            raise ProtocolError(400, f"connection-specific header field {name!r}")
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            if host is not None:
                raise ProtocolError(400, "duplicate host header")
            host = value
        else:
            if name == b"content-length":
                if length is not None:
                    raise ProtocolError(400, "duplicate content-length")
                length = value
            elif name == b"te" and value != b"trailers":
                raise ProtocolError(400, "te other than trailers")
            fields.append((name, value))
    method = pseudo.get(b":method")
    path = pseudo.get(b":path")
    authority = pseudo.get(b":authority")
    if method is None:
        raise ProtocolError(400, "missing :method")
    if not method or method.translate(None, TCHAR):
        raise ProtocolError(400, f"invalid :method {show(method)}")
    protocol = pseudo.get(b":protocol")
    if method == b"CONNECT":
        if protocol is None:
            raise ProtocolError(501, "method 'CONNECT' is not implemented")
        if protocol != b"websocket":
            raise ProtocolError(501, f"extended CONNECT for {show(protocol)}")
        if ended or length is not None:
            raise ProtocolError(400, "extended CONNECT with the stream ended or a length")
    elif protocol is not None:
        raise ProtocolError(400, ":protocol without CONNECT")
    if b":scheme" not in pseudo:
        raise ProtocolError(400, "missing :scheme")
    if not path or not (path[:1] == b"/" or (path == b"*" and method == b"OPTIONS")):
        raise ProtocolError(400, "missing or invalid :path")
    if BAD_PATH.search(path):
        raise ProtocolError(400, f"invalid :path {show(path)}")
    if authority is None:
        authority = host
    elif host is not None and host != authority:
        raise ProtocolError(400, "host differs from :authority")
    if not authority:
        raise ProtocolError(400, "missing :authority and host")
    if authority.translate(None, HOST_CHARS):
        raise ProtocolError(400, f"invalid :authority {show(authority)}")
    fields.insert(0, (b"host", authority))
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    if protocol is not None:  # RFC 8441: the backend gets an HTTP/1.1 upgrade (a GET)
        return RequestHead(b"GET", path, b"2", Headers(fields), upgrade=b"websocket")
    framing, content_length = Framing.NONE, None
    if length is not None:
        if not length.isdigit():
            raise ProtocolError(400, f"invalid content-length {length!r}")
        content_length = int(length)
        if content_length and ended:  # (H2Protocol counts DATA against it: none comes)
            raise ProtocolError(400, "content-length with no body (the stream ended)")
        if content_length and not ended:
            framing = Framing.LENGTH
    elif not ended:
        framing = Framing.CHUNKED
    return RequestHead(method, path, b"2", Headers(fields), framing, content_length, True)


def trailer_fields(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A request's trailer block (RFC 9113 8.1), checked as a header block's regular
    fields are; fields that would change framing or routing if a next hop merged them
    into the head are refused too (RFC 9110 6.5.1).

    Raises:
      ProtocolError: 400.
    """
    for name, value in headers:
        if name[:1] == b":":
            raise ProtocolError(400, f"pseudo-header {name!r} in trailers")
        if not name or name.translate(None, NAME_CHARS):
            raise ProtocolError(400, f"invalid trailer field name {name!r}")
        if name in CONNECTION_SPECIFIC or name in NOT_IN_TRAILERS:
            raise ProtocolError(400, f"trailer field {name!r} is not allowed")
        if BAD_VALUE.search(value):
            raise ProtocolError(400, f"invalid value of trailer field {name!r}")
    return headers
