"""HTTP/2 request header blocks to RequestHead: RFC 9113's rules, without sockets."""

from __future__ import annotations

import pytest

from trilb.errors import ProtocolError
from trilb.l7.h2head import request_head
from trilb.messages import Framing

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"Example.test:8443"),
        (b":path", b"/a?b=1")]  # fmt: skip


def test_a_plain_request_becomes_an_http11_head() -> None:
    head = request_head([*BASE, (b"accept", b"*/*"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
                        ended=True)  # fmt: skip
    assert (head.method, head.target, head.framing) == (b"GET", b"/a?b=1", Framing.NONE)
    assert head.headers.items == [(b"host", b"Example.test:8443"), (b"accept", b"*/*"),
                                  (b"cookie", b"a=1; b=2")]  # fmt: skip
    assert not head.raw  # rebuilt for the backend, never forwarded as received


def test_extended_connect_for_websocket_becomes_an_upgrade_get() -> None:
    block = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *BASE[1:],
             (b"sec-websocket-version", b"13"), (b"origin", b"https://example.test")]  # fmt: skip
    head = request_head(block, ended=False)
    assert (head.method, head.target, head.upgrade) == (b"GET", b"/a?b=1", b"websocket")
    assert head.framing is Framing.NONE  # the stream's DATA is the tunnel, not a body
    assert head.headers.get(b"host") == b"Example.test:8443"
    assert head.headers.get(b"sec-websocket-version") == b"13"


def test_framing_of_bodies() -> None:
    post = [(b":method", b"POST"), *BASE[1:]]
    assert request_head([*post, (b"content-length", b"5")], ended=False).framing is Framing.LENGTH
    assert request_head(post, ended=False).framing is Framing.CHUNKED
    assert request_head([*post, (b"content-length", b"0")], ended=False).framing is Framing.NONE
    head = request_head([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                         (b"host", b"h.test")], ended=True)  # fmt: skip
    assert head.headers.get(b"host") == b"h.test"  # Host when there is no :authority


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([*BASE, (b"X-Upper", b"1")], 400),
        ([*BASE, (b"bad name", b"1")], 400),
        ([*BASE, (b"", b"1")], 400),
        ([*BASE, (b"x", b"a\r\nx-injected: 1")], 400),
        ([*BASE, (b"x", b"a\x00b")], 400),
        ([*BASE, (b"x", b"a\x01b")], 400),
        ([*BASE, (b"x", b" leading")], 400),
        ([*BASE, (b"x", b"trailing\t")], 400),
        ([*BASE, (b"connection", b"close")], 400),
        ([*BASE, (b"keep-alive", b"5")], 400),
        ([*BASE, (b"transfer-encoding", b"chunked")], 400),
        ([*BASE, (b"upgrade", b"websocket")], 400),
        ([*BASE, (b"proxy-connection", b"x")], 400),
        ([*BASE, (b"te", b"gzip")], 400),
        ([*BASE, (b"content-length", b"1"), (b"content-length", b"1")], 400),
        ([*BASE, (b"content-length", b"-1")], 400),
        ([*BASE, (b"content-length", b"5")], 400),  # the stream ended: no body to count
        ([*BASE, (b"host", b"other.test")], 400),
        ([*BASE, (b"host", b"a.test"), (b"host", b"a.test")], 400),
        ([*BASE, (b":path", b"/twice")], 400),
        ([BASE[0], BASE[0], *BASE[1:]], 400),
        ([*BASE[:3], (b"accept", b"x"), BASE[3]], 400),  # a pseudo-header after a field
        ([*BASE, (b":status", b"200")], 400),
        ([*BASE, (b":protocol", b"websocket")], 400),  # :protocol without CONNECT
        ([(b":method", b"CONNECT"), *BASE[1:], (b":protocol", b"chat")], 501),
        ([(b":method", b"CONNECT"), *BASE[1:], (b":protocol", b"websocket")], 400),  # ended
        (BASE[1:], 400),  # no :method
        ([BASE[0], *BASE[2:]], 400),  # no :scheme
        (BASE[:3], 400),  # no :path
        ([BASE[0], BASE[1], BASE[3]], 400),  # no :authority nor host
        ([(b":method", b"G T"), *BASE[1:]], 400),
        ([*BASE[:3], (b":path", b"/a b")], 400),
        ([*BASE[:3], (b":path", b"/a#frag")], 400),
        ([*BASE[:3], (b":path", b"a")], 400),
        ([*BASE[:3], (b":path", b"*")], 400),  # asterisk-form is for OPTIONS only
        ([*BASE[:2], (b":authority", b"a.test/evil"), BASE[3]], 400),
        ([(b":method", b"CONNECT"), (b":authority", b"a.test:443")], 501),
    ],
)
def test_malformed_blocks_are_refused(fields: list[tuple[bytes, bytes]], status: int) -> None:
    with pytest.raises(ProtocolError) as err:
        request_head(fields, ended=True)
    assert err.value.status == status


def test_options_asterisk_is_accepted() -> None:
    head = request_head([(b":method", b"OPTIONS"), *BASE[1:3], (b":path", b"*")], ended=True)
    assert head.target == b"*"
