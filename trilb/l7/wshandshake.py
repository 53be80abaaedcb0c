"""The WebSocket opening handshake as a proxy checks it (RFC 6455 section 4), sans I/O.

Owns three decisions: whether a client's upgrade request is a WebSocket handshake trilb
relays (400, or 426 for a version it cannot relay), what a backend must answer to the
key it was sent (Sec-WebSocket-Accept), and whether a backend's 101 completes that
handshake (502 when not: the client would otherwise speak frames to an HTTP server).
It also writes the 101 that goes to an HTTP/1.1 client. The relaying itself is
l7/websocket.py's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from trilb.errors import ProtocolError
from trilb.l7.forward import forward_response_fields
from trilb.l7.http1 import serialize_response
from trilb.messages import Framing, Headers, RequestHead, ResponseHead

# RFC 6455 1.3: appended to the key before hashing it into Sec-WebSocket-Accept.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The only version RFC 6455 defines; 426 names it for a client that sent another.
VERSION = b"13"
UPGRADE_FIELDS = [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]


def tokens(headers: Headers, name: bytes) -> set[bytes]:
    """The lowercased comma-separated tokens of every ``name`` field."""
    return {
        t.strip().lower() for value in headers.get_all(name) for t in value.split(b",") if t.strip()
    }


def check_request(head: RequestHead) -> bytes:
    """A client's WebSocket handshake, checked; returns its Sec-WebSocket-Key.

    Raises:
      ProtocolError: 400 for a malformed handshake, 426 for a version other than 13.
    """
    if head.method != b"GET":
        raise ProtocolError(400, f"websocket handshake with method {head.method.decode()!r}")
    if head.framing is not Framing.NONE:
        raise ProtocolError(400, "websocket handshake with a request body")
    keys = head.headers.get_all(b"sec-websocket-key")
    if len(keys) != 1:
        raise ProtocolError(400, f"websocket handshake with {len(keys)} sec-websocket-key fields")
    key = keys[0].strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid = False
    if not valid:
        raise ProtocolError(400, "sec-websocket-key is not 16 bytes in base64")
    check_version(head.headers)
    return key


def check_version(headers: Headers) -> None:
    """Sec-WebSocket-Version must be 13 (RFC 6455 4.2.2: else 426, naming 13).

    Raises:
      ProtocolError: 426.
    """
    if headers.get_all(b"sec-websocket-version") != [VERSION]:
        raise ProtocolError(426, "websocket version other than 13")


def check_h2_request(head: RequestHead) -> bytes:
    """An extended CONNECT's WebSocket request (RFC 8441 5), made into the HTTP/1.1
    handshake the backend gets: HTTP/2 has no key, so trilb adds one; returns it.

    Raises:
      ProtocolError: 426 for a version other than 13.
    """
    check_version(head.headers)
    key = base64.b64encode(os.urandom(16))
    head.headers.add(b"sec-websocket-key", key)
    return key


def h2_response_fields(rhead: ResponseHead) -> list[tuple[bytes, bytes]]:
    """The fields of the 200 that answers an extended CONNECT, from the backend's 101:
    the end-to-end ones but the accept (RFC 8441 5: no key, no accept in HTTP/2)."""
    fields = [(b":status", b"200")]
    fields += [f for f in forward_response_fields(rhead.headers) if f[0] != b"sec-websocket-accept"]
    return fields


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept that answers ``key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def check_response(rhead: ResponseHead, key: bytes, extensions: bool) -> None:
    """A backend's 101 must complete the handshake trilb forwarded with ``key``.
    ``extensions``: whether the request offered any (the message path offers none).

    Raises:
      ProtocolError: 502, naming what is wrong.
    """
    headers = rhead.headers
    if b"websocket" not in tokens(headers, b"upgrade"):
        raise ProtocolError(502, "backend switched protocols, but not to websocket")
    if b"upgrade" not in tokens(headers, b"connection"):
        raise ProtocolError(502, "backend's 101 lacks connection: upgrade")
    if headers.get_all(b"sec-websocket-accept") != [accept_for(key)]:
        raise ProtocolError(502, "backend's sec-websocket-accept does not match the key")
    if not extensions and b"sec-websocket-extensions" in headers:
        raise ProtocolError(502, "backend accepted a websocket extension nobody offered")


def switching_wire(rhead: ResponseHead) -> bytes:
    """The backend's 101 as it goes to an HTTP/1.1 client: its end-to-end fields (the
    accept, subprotocol and extensions among them), the upgrade fields, trilb's Via."""
    fields = forward_response_fields(rhead.headers)
    fields.extend(UPGRADE_FIELDS)
    return serialize_response(rhead, fields, b"1.1")
