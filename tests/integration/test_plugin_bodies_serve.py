"""A real `trilb serve` running plugins' body and message phases (tests/plugin/sample.py:
Scrub, Shout, Chat) between real clients (httpx over HTTP/1.1 and HTTP/2, raw sockets,
`websockets`) and real backends."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import wsproto.events
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.integration.conftest import Trilb, free_port
from tests.integration.test_websocket_serve import H2WebSocket, WsOrigin, ws_origin

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]
__all__ = ["ws_origin"]  # a fixture used by name
ALPHABET = b"abcdefghijklmnopqrstuvwxyz"


class Origin(BaseHTTPRequestHandler):
    """POST: reads the body (Content-Length or chunked) and says what it got, as JSON.
    GET /big/N, /chunked/N, /close/N: N bytes of lowercase letters, framed that way."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            framing, body = "chunked", self._read_chunked()
        else:
            framing, body = "length", self.rfile.read(int(self.headers["content-length"]))
        self.server.posts += 1  # type: ignore[attr-defined]
        answer = json.dumps({"framing": framing, "size": len(body),
                             "secret": body.count(b"secret"), "masked": body.count(b"XXXXXX"),
                             "length": self.headers.get("content-length")}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def do_GET(self) -> None:
        kind, _, n = self.path.rpartition("/")
        size = int(n)
        data = (ALPHABET * (size // 26 + 1))[:size]
        self.send_response(200)
        if kind.endswith("/chunked"):
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(0, size, 4096):
                piece = data[i : i + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nx-trailer: yes\r\n\r\n")
        elif kind.endswith("/close"):
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
        else:
            self.send_header("content-length", str(size))
            self.end_headers()
            self.wfile.write(data)


@pytest.fixture
def origin() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    server.posts = 0  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxied(trilb_factory: Factory, origin: ThreadingHTTPServer, ws_origin: WsOrigin) -> int:
    port = free_port()
    trilb_factory(f"""
[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"

[[frontends.web.routes]]
path_prefix = "/up/"
backend = "app"
plugins = ["scrub"]

[[frontends.web.routes]]
path_prefix = "/gated/"
backend = "app"
plugins = ["scrub_buffered"]

[[frontends.web.routes]]
path_prefix = "/shout/"
backend = "app"
plugins = ["shout"]

[[frontends.web.routes]]
path_prefix = "/suffix/"
backend = "app"
plugins = ["suffix"]

[[frontends.web.routes]]
path_prefix = "/crashy/"
backend = "app"
plugins = ["crashy"]

[[frontends.web.routes]]
path_prefix = "/waf/"
backend = "app"
plugins = ["waf"]

[[frontends.web.routes]]
path_prefix = "/ws"
backend = "ws"
plugins = ["chat"]

[backends.app]
servers = ["127.0.0.1:{origin.server_address[1]}"]

[backends.ws]
servers = ["127.0.0.1:{ws_origin.port}"]

[plugins.scrub]
type = "tests.plugin.sample:Scrub"

[plugins.scrub_buffered]
type = "tests.plugin.sample:Scrub"
buffer = 65536

[plugins.shout]
type = "tests.plugin.sample:Shout"

[plugins.suffix]
type = "tests.plugin.sample:Shout"
suffix = "!!"

[plugins.crashy]
type = "tests.plugin.sample:Shout"
crash = "xyz"

[plugins.waf]
body_limit = 1024

[plugins.chat]
type = "tests.plugin.sample:Chat"
""", workers=1)  # fmt: skip
    return port


@pytest.mark.parametrize("http2", [False, True])
def test_a_small_request_body_is_one_call_and_is_rewritten(proxied: int, http2: bool) -> None:
    body = b'{"password": "secret", "note": "a secret"}'
    with httpx.Client(http1=not http2, http2=http2) as client:
        r = client.post(f"http://127.0.0.1:{proxied}/up/login", content=body)
    assert r.status_code == 200
    got = r.json()
    assert (got["size"], got["secret"], got["masked"]) == (len(body), 0, 2)
    assert r.headers["x-scrub"] == f"1 {len(body)}"  # one call, with the whole body


def test_a_large_body_streams_through_the_phase_with_its_length(proxied: int) -> None:
    body = (b"x" * 1000 + b"secret") * 1000  # 1 MiB: many reads, many calls
    r = httpx.post(f"http://127.0.0.1:{proxied}/up/upload", content=body, timeout=10)
    got = r.json()
    assert (got["framing"], got["length"], got["size"]) == ("length", str(len(body)), len(body))
    calls = int(r.headers["x-scrub"].split()[0])
    assert calls > 1
    # A word cut by a read boundary is the plugin's own business: most are masked.
    assert got["masked"] >= 1000 - calls and got["secret"] + got["masked"] == 1000


def test_a_chunked_request_body_stays_chunked(proxied: int) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(50):
            yield b"the secret is safe " * 100

    r = httpx.post(f"http://127.0.0.1:{proxied}/up/stream", content=pieces(), timeout=10)
    got = r.json()
    assert (got["framing"], got["size"], got["secret"]) == ("chunked", 50 * 1900, 0)
    assert got["masked"] == 5000


def test_expect_100_continue_is_answered_before_the_phase_reads_the_body(proxied: int) -> None:
    with socket.create_connection(("127.0.0.1", proxied), timeout=10) as sock:
        sock.sendall(b"POST /up/x HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n"
                     b"expect: 100-continue\r\n\r\n")  # fmt: skip
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"secret")
        out = b""
        while b'"masked": 1' not in out and (chunk := sock.recv(4096)):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200 ") and b'"secret": 0' in out


def test_a_buffered_phase_sees_the_body_start_and_answers_before_any_backend(
    proxied: int, origin: ThreadingHTTPServer
) -> None:
    body = b"a" * 40000 + b"forbidden" + b"b" * 8000
    r = httpx.post(f"http://127.0.0.1:{proxied}/gated/form", content=body, timeout=10)
    assert (r.status_code, r.text) == (422, "refused body\n")
    assert origin.posts == 0  # the backend never heard of it
    ok = httpx.post(f"http://127.0.0.1:{proxied}/gated/form", content=b"c" * 100000, timeout=10)
    assert ok.status_code == 200 and ok.json()["size"] == 100000
    _calls, first = map(int, ok.headers["x-scrub"].split())
    assert first >= 65536 and origin.posts == 1  # the first call had at least the buffer


def test_a_refusing_body_phase_over_http2_gets_its_status(
    proxied: int, origin: ThreadingHTTPServer
) -> None:
    with httpx.Client(http2=True, http1=False) as client:
        r = client.post(f"http://127.0.0.1:{proxied}/up/x", content=b"so forbidden")
        assert (r.status_code, r.text) == (422, "refused body\n")
        assert client.get(f"http://127.0.0.1:{proxied}/up/big/10").status_code == 200
    assert origin.posts == 0


@pytest.mark.parametrize("http2", [False, True])
@pytest.mark.parametrize("kind", ["big", "chunked", "close"])
def test_response_bodies_are_rewritten(proxied: int, http2: bool, kind: str) -> None:
    size = 300000
    letters = (ALPHABET * (size // 26 + 1))[:size]
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
        small = client.get(f"http://127.0.0.1:{proxied}/suffix/{kind}/10")
        assert small.content == b"ABCDEFGHIJ!!"
        # A body the first call had whole goes with the length of what came out; a
        # chunked one stays chunked (its trailers go on)
        # (a close-delimited one has not ended for trilb until the close, after that call)
        assert small.headers.get("content-length") == ("12" if kind == "big" else None)
        big = client.get(f"http://127.0.0.1:{proxied}/shout/{kind}/{size}")
        assert big.content == letters.upper()
        if kind == "chunked" or (kind == "close" and not http2):
            # Streamed as chunks, so a length change is fine.
            longer = client.get(f"http://127.0.0.1:{proxied}/suffix/{kind}/{size}")
            assert longer.content == letters.upper() + b"!!"
        # The connection is still good.
        assert client.get(f"http://127.0.0.1:{proxied}/shout/big/3").content == b"ABC"


def test_a_streamed_length_the_phase_broke_cuts_the_response(proxied: int) -> None:
    # 300000 bytes with Content-Length: the first call does not have it all, and the
    # suffix at the end would make it 300002: the response is cut, never overlong.
    with socket.create_connection(("127.0.0.1", proxied), timeout=10) as sock:
        sock.sendall(b"GET /suffix/big/300000 HTTP/1.1\r\nhost: x\r\n\r\n")
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-length: 300000" in head.lower()
    assert len(body) < 300000
    assert httpx.get(f"http://127.0.0.1:{proxied}/shout/big/3").content == b"ABC"


def test_a_failing_response_phase_is_a_500_before_the_head(proxied: int) -> None:
    base = f"http://127.0.0.1:{proxied}/crashy"
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{base}/big/20").content == b"ABCDEFGHIJKLMNOPQRST"
        assert client.get(f"{base}/big/30").status_code == 500  # "xyz" in the body
        assert client.get(f"{base}/chunked/30").status_code == 500
        assert client.get(f"{base}/big/20").status_code == 200  # the worker serves on


@pytest.mark.parametrize("http2", [False, True])
def test_the_waf_judges_a_body_before_any_backend_sees_it(
    proxied: int, origin: ThreadingHTTPServer, http2: bool
) -> None:
    base = f"http://127.0.0.1:{proxied}/waf"
    attack = {"user": {"name": "jane", "bio": "1' UNION SELECT password FROM users--"}}
    form = {"comment": "<script>alert(document.cookie)</script>"}
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
        assert client.post(f"{base}/api", json=attack).status_code == 403
        assert client.post(f"{base}/form", data=form).status_code == 403
        assert origin.posts == 0
        fine = client.post(f"{base}/api", json={"q": "O'Reilly & sons: select a plan"})
        assert fine.status_code == 200 and origin.posts == 1
        # Past body_limit a body is not inspected: the limit is what it says.
        late = {"pad": "x" * 2000, "comment": form["comment"]}
        assert client.post(f"{base}/form", data=late).status_code == 200


def test_websocket_messages_go_through_the_message_phase(proxied: int, ws_origin: WsOrigin) -> None:
    with connect(f"ws://127.0.0.1:{proxied}/ws/echo") as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "HELLO"  # up-cased on the way in, echoed
        ws.send("drop")  # dropped: the backend never sees it
        ws.send("after")
        assert ws.recv(timeout=5) == "AFTER"
        ws.send(b"abc")  # echoed, reversed on the way back
        assert ws.recv(timeout=5) == b"cba"
        ws.send("crash")  # the plugin fails: both sides get 1011
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert ws_origin.received == [5, 5, 3]


def test_websocket_messages_over_http2_go_through_the_message_phase(proxied: int) -> None:
    client = H2WebSocket(proxied, "/ws/echo")
    try:
        assert client.status == b"200"
        client.send(wsproto.events.TextMessage("drop"))
        client.send(wsproto.events.TextMessage("h2"))
        assert client.recv() == "H2"
        client.send(wsproto.events.BytesMessage(b"xyz"))
        assert client.recv() == b"zyx"
    finally:
        client.close()
