"""Proxy.response_wire: a head forwarded as received (ResponseHead.raw) says what the
general path (fields rebuilt one by one) says."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from trilb.config.load import parse_config
from trilb.l7.http1 import RequestParser, ResponseParser
from trilb.l7.proxy import Proxy
from trilb.messages import ResponseHead

CONFIG = """
[frontends.web]
mode = "http"
bind = "127.0.0.1:1"
default_backend = "app"
[backends.app]
servers = ["127.0.0.1:2"]
"""

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
    b'ETag: "a"\r\n\r\n',
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nCONNECTION: Close\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
    b'HTTP/1.1 304 Not Modified\r\nEtag: "v"\r\nConnection: keep-alive\r\n\r\n',
    b"HTTP/1.1 200 OK\r\nX-Only: no framing\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nConnection:keep-alive\r\nDate: today\r\n\r\n",
    # Not forwardable as received: each takes the general path.
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\n"
    b"Content-Length: 3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nVia: 1.1 app\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n"
    b"Content-Length: 3\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
]


def proxy(draining: bool = False) -> Proxy:
    config = parse_config(tomllib.loads(CONFIG))
    out = Proxy(config.frontends["web"], {})
    out.draining = draining
    return out


def parsed(wire: bytes) -> tuple[ResponseHead, list[tuple[bytes, bytes]]]:
    head = ResponseParser().feed(wire)
    assert head is not None and ResponseParser().feed(wire) is not None
    return head, sorted(head.headers.items)


@pytest.mark.parametrize("response", RESPONSES)
@pytest.mark.parametrize("request_keeps", [True, False])
@pytest.mark.parametrize("draining", [False, True])
def test_raw_and_rebuilt_heads_say_the_same(
    response: bytes, request_keeps: bool, draining: bool
) -> None:
    request = b"GET / HTTP/1.1\r\nHost: a\r\n" + (b"" if request_keeps else
                                                   b"Connection: close\r\n") + b"\r\n"  # fmt: skip
    head = RequestParser().feed(request)
    rhead = ResponseParser().feed(response + b"abc")
    assert head is not None and rhead is not None
    p = proxy(draining)
    wire, keep = p.response_wire(head, rhead)
    general, general_keep = p.response_wire(head, dataclasses.replace(rhead, raw=b""))
    assert keep == general_keep
    a, a_fields = parsed(wire)
    b, b_fields = parsed(general)
    # The raw head may keep the backend's "Connection: keep-alive" where the general path
    # says nothing: both mean the connection stays open (keep_alive, compared below).
    a_fields = [(n, v) for n, v in a_fields if (n, v.lower()) != (b"connection", b"keep-alive")]
    assert (a.status, a.reason, a.keep_alive, a.framing) == (b.status, b.reason, b.keep_alive,
                                                              b.framing)  # fmt: skip
    assert a_fields == b_fields
    assert [v for n, v in a_fields if n == b"via"][-1].endswith(b"1.1 trilb")


def test_only_plain_http11_heads_are_forwarded_as_received() -> None:
    raw = [ResponseParser().feed(r + b"abc") for r in RESPONSES]
    assert [bool(h.raw) for h in raw if h is not None] == [True] * 7 + [False] * 6


def test_a_raw_head_keeps_connection_keep_alive_only_while_the_client_stays() -> None:
    rhead = ResponseParser().feed(RESPONSES[0] + b"abc")
    assert rhead is not None and rhead.keep_alive_line
    assert rhead.raw == RESPONSES[0][:-2]  # forwarded as received: no copy made
    stays = RequestParser().feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    closes = RequestParser().feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert stays is not None and closes is not None
    wire, keep = proxy().response_wire(stays, rhead)
    assert keep and wire == RESPONSES[0][:-2] + b"via: 1.1 trilb\r\n\r\n"
    wire, keep = proxy().response_wire(closes, rhead)
    assert not keep
    assert wire == (b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 3\r\n"
                    b'ETag: "a"\r\nvia: 1.1 trilb\r\nconnection: close\r\n\r\n')  # fmt: skip
    closing = ResponseParser().feed(RESPONSES[2] + b"abc")  # Connection: close: cut at once
    assert closing is not None and not closing.keep_alive_line
    assert closing.raw == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"


REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a?b=c HTTP/1.1\r\nHost: h:8080\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
    b"GET http://h/x HTTP/1.1\r\nHost: h\r\nconnection: Close\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nCookie: a=b\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    # Not forwardable as received: each takes the general path.
    b"GET /a HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\nVia: 1.0 p\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: x-a\r\nX-A: 1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\nProxy-Authorization: x\r\n\r\n",
]


def request_fields(wire: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    head = RequestParser().feed(wire)
    assert head is not None
    return head.method, head.target, sorted(head.headers.items)


@pytest.mark.parametrize("request_", REQUESTS)
def test_raw_and_rebuilt_request_heads_say_the_same(request_: bytes) -> None:
    head = RequestParser().feed(request_)
    assert head is not None
    p = proxy()
    raw = p.request_wire(head, b"127.0.0.7")
    general = p.request_wire(dataclasses.replace(head, raw=b""), b"127.0.0.7")
    assert request_fields(raw) == request_fields(general)
    assert raw.startswith(b"%s %s HTTP/1.1\r\n" % (head.method, head.target))


def test_only_plain_http11_requests_are_forwarded_as_received() -> None:
    heads = [RequestParser().feed(r) for r in REQUESTS]
    assert [bool(h.raw) for h in heads if h is not None] == [True] * 5 + [False] * 7
