"""Micro-benchmark of HTTP/1.1 head parsing: h11, trilb's strict parser, raw httptools.

Owns the per-message CPU figures behind the parser choice in docs/benchmarks.md: the same
browser-like GET head (about 400 bytes, 9 fields) and the same response head parsed N
times by each parser, in one process, best of several rounds. It measures parsing only,
with no sockets, and deliberately does not compare correctness (tests/l7 does that).

    python loadtests/bench_parsers.py [-n 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h11
import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trilb.l7.http1 import (
    RequestParser,
    ResponseParser,
    serialize_request,
    serialize_response,
)

REQUEST = (
    b"GET /static/app/main.css?v=20261127 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/css,*/*;q=0.1\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=4f2a9c1e7b3d; theme=dark\r\n"
    b"Sec-Fetch-Dest: style\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Fri, 27 Nov 2026 09:00:00 GMT\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Content-Type: text/css; charset=utf-8\r\n"
    b"Content-Length: 18742\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 17:12:03 GMT\r\n"
    b'ETag: "6745f0c3-4936"\r\n'
    b"Cache-Control: public, max-age=3600\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)


class RawProtocol:
    """Callbacks that only collect what llhttp reports: the no-checks baseline."""

    __slots__ = ("done", "fields", "url")

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True


def h11_request() -> object:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(REQUEST)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


def h11_response_setup() -> h11.Connection:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "www.example.com")]))
    conn.send(h11.EndOfMessage())
    return conn


def h11_response() -> object:
    conn = h11_response_setup()
    conn.receive_data(RESPONSE)
    event = conn.next_event()
    assert isinstance(event, h11.Response)
    return event


def h11_connection() -> object:
    return h11.Connection(h11.SERVER)


def make_trilb_request() -> Callable[[], object]:
    parser = RequestParser()  # reused, as on a keep-alive connection

    def parse() -> object:
        head = parser.feed(REQUEST)
        assert head is not None
        return head

    return parse


def make_trilb_response() -> Callable[[], object]:
    parser = ResponseParser()

    def parse() -> object:
        head = parser.feed(RESPONSE)
        assert head is not None
        return head

    return parse


def make_raw_request() -> Callable[[], object]:
    proto = RawProtocol()
    parser = httptools.HttpRequestParser(proto)  # a bodiless GET leaves it reusable

    def parse() -> object:
        proto.fields = []
        parser.feed_data(REQUEST)
        assert proto.done
        return proto.fields

    return parse


def make_raw_response() -> Callable[[], object]:
    proto = RawProtocol()

    def parse() -> object:
        # The body is relayed without llhttp, so each response needs a fresh parser.
        parser = httptools.HttpResponseParser(proto)
        proto.fields = []
        parser.feed_data(RESPONSE)
        return proto.fields

    return parse


def make_serialize_request() -> Callable[[], object]:
    head = RequestParser().feed(REQUEST)
    assert head is not None
    return lambda: serialize_request(head)


def make_serialize_response() -> Callable[[], object]:
    head = ResponseParser().feed(RESPONSE)
    assert head is not None
    return lambda: serialize_response(head)


def make_llhttp_new() -> Callable[[], object]:
    proto = RawProtocol()
    return lambda: httptools.HttpRequestParser(proto)


def make_llhttp_reinit() -> Callable[[], object]:
    proto = RawProtocol()
    parser = httptools.HttpRequestParser(proto)
    return lambda: parser.__init__(proto)  # type: ignore[misc]  # measuring a reset on purpose


def measure(fn: Callable[[], object], number: int, rounds: int) -> float:
    """Best µs per call over ``rounds`` rounds of ``number`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / number / 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[], object]]] = [
        ("request   h11 (new Connection per message)", h11_request),
        ("request   trilb RequestParser (strict)", make_trilb_request()),
        ("request   raw httptools (no checks)", make_raw_request()),
        ("response  h11 (incl. setup below)", h11_response),
        ("response  trilb ResponseParser (strict)", make_trilb_response()),
        ("response  raw httptools (no checks)", make_raw_response()),
        ("setup     h11 Connection() alone", h11_connection),
        ("setup     h11 client Connection + sent GET", h11_response_setup),
        ("serialize trilb serialize_request", make_serialize_request()),
        ("serialize trilb serialize_response", make_serialize_response()),
        ("reset     new httptools parser object", make_llhttp_new()),
        ("reset     httptools parser __init__ again", make_llhttp_reinit()),
    ]
    print(
        f"python {platform.python_version()}, httptools {httptools.__version__}, "
        f"h11 {importlib.metadata.version('h11')}; request {len(REQUEST)} B, "
        f"response {len(RESPONSE)} B; n={args.n}, best of {args.rounds}"
    )
    for name, fn in cases:
        print(f"{name:46} {measure(fn, args.n, args.rounds):7.2f} µs/message")


if __name__ == "__main__":
    main()
