"""A real `trilb serve` with an http frontend in front of real HTTP backends."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ThreadedServer, Trilb, free_port

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


class Recorder(BaseHTTPRequestHandler):
    """Answers with its server's name; POST bodies are hashed; /chunked streams chunks."""

    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.command, self.path, dict(self.headers)))
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for part in (b"one ", b"two ", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/not-modified":
            self.send_response(304)
            self.send_header("etag", '"v1"')
            self.end_headers()
            return
        body = f"{srv.name} {self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self) -> None:
        self.do_GET()

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "1234")
        self.end_headers()

    def do_POST(self) -> None:
        digest = hashlib.sha256()
        if self.headers.get("transfer-encoding") == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                digest.update(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass  # trailers
        n = int(self.headers.get("content-length", "0"))
        while n:
            data = self.rfile.read(min(n, 1 << 20))
            digest.update(data)
            n -= len(data)
        body = digest.hexdigest().encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Backend:
    def __init__(self, name: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        self.server.daemon_threads = True
        self.server.name = name
        self.server.requests = []
        self.connections = 0
        original = self.server.get_request

        def counted() -> tuple[socket.socket, object]:
            self.connections += 1
            return original()

        self.server.get_request = counted
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return self.server.requests

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_backends() -> Iterator[list[Backend]]:
    pair = [Backend("A"), Backend("B")]
    yield pair
    for b in pair:
        b.stop()


def http_config(port: int, a: int, b: int, extra: str = "") -> str:
    return f"""
[global]
grace = "2s"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"
header_timeout = "1s"
{extra}
[[frontends.web.routes]]
path_prefix = "/only-b/"
backend = "b"

[backends.app]
response_timeout = "1s"
servers = ["127.0.0.1:{a}", "127.0.0.1:{b}"]

[backends.b]
servers = ["127.0.0.1:{b}"]
"""


def one_server_config(port: int, server: int, extra: str = "") -> str:
    """http_config with ``server`` as the app backend's only server."""
    return http_config(port, server, free_port(), extra).replace(
        f'servers = ["127.0.0.1:{server}", ', f'servers = ["127.0.0.1:{server}"]\n# '
    )


@pytest.fixture
def web(trilb_factory: Factory, http_backends: list[Backend]) -> tuple[Trilb, str]:
    port = free_port()
    a, b = (x.port for x in http_backends)
    t = trilb_factory(http_config(port, a, b), workers=1, ready=1)
    return t, f"http://127.0.0.1:{port}"


def test_get_round_robin_routing_and_forwarding_headers(
    web: tuple[Trilb, str], http_backends: list[Backend]
) -> None:
    _, url = web
    with httpx.Client() as client:
        names = [client.get(f"{url}/x").text.split()[0] for _ in range(4)]
        assert sorted(names) == ["A", "A", "B", "B"]
        assert client.get(f"{url}/only-b/page").text == "B /only-b/page"
    _, _, headers = http_backends[0].requests[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["x-forwarded-for"] == "127.0.0.1"
    assert lowered["x-forwarded-proto"] == "http"
    assert lowered["via"] == "1.1 trilb"


def test_keep_alive_reuses_backend_connections(
    web: tuple[Trilb, str], http_backends: list[Backend]
) -> None:
    _, url = web
    with httpx.Client() as client:
        for _ in range(20):
            assert client.get(f"{url}/k").status_code == 200
    assert sum(b.connections for b in http_backends) <= 4  # far fewer than 20 requests


def test_post_of_a_streamed_body_arrives_intact(web: tuple[Trilb, str]) -> None:
    _, url = web
    body = os.urandom(8 << 20)
    with httpx.Client(timeout=30) as client:
        reply = client.post(f"{url}/up", content=body)
    assert reply.status_code == 200
    assert reply.text == hashlib.sha256(body).hexdigest()


def test_chunked_download_and_head(web: tuple[Trilb, str]) -> None:
    _, url = web
    with httpx.Client() as client:
        assert client.get(f"{url}/chunked").text == "one two three"
        head = client.head(f"{url}/h")
        assert head.status_code == 200 and head.headers["content-length"] == "1234"


def raw(port_url: str, request: bytes, timeout: float = 5.0) -> bytes:
    host, port = port_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        try:
            while data := s.recv(65536):
                chunks.append(data)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def read_head(conn: socket.socket, data: bytes) -> tuple[bytes, bytes] | None:
    """For the test backends: read until a head is complete (``data``: bytes already
    read); (the head, what followed it), or None at the end of the stream."""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def test_an_ambiguous_request_gets_400_and_reaches_no_backend(
    web: tuple[Trilb, str], http_backends: list[Backend]
) -> None:
    _, url = web
    reply = raw(url, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")  # fmt: skip
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert all(not b.requests for b in http_backends)


def test_a_slow_request_head_gets_408(web: tuple[Trilb, str]) -> None:
    _, url = web
    start = time.monotonic()
    reply = raw(url, b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - start < 3


def test_a_backend_that_does_not_answer_in_time_gives_504(web: tuple[Trilb, str]) -> None:
    _, url = web
    start = time.monotonic()
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{url}/slow").status_code == 504
    assert time.monotonic() - start < 2.8


def test_dead_servers_give_502_and_no_backend_address_leaks(
    trilb_factory: Factory,
) -> None:
    port = free_port()
    dead_a, dead_b = free_port(), free_port()
    trilb_factory(http_config(port, dead_a, dead_b), workers=1, ready=1)
    with httpx.Client() as client:
        reply = client.get(f"http://127.0.0.1:{port}/")
    assert reply.status_code == 502
    assert str(dead_a) not in reply.text and "127.0.0.1" not in reply.text


def test_pipelined_requests_are_answered_in_order(web: tuple[Trilb, str]) -> None:
    _, url = web
    reply = raw(url, b"GET /only-b/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /only-b/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
    first = reply.find(b"B /only-b/1")
    second = reply.find(b"B /only-b/2")
    assert 0 < first < second


def test_pipelined_small_posts_keep_their_bodies_and_order(web: tuple[Trilb, str]) -> None:
    _, url = web
    bodies = [b"first body", b"second", b""]
    wire = b"".join(b"POST /up HTTP/1.1\r\nHost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(b), b)
                    for b in bodies)  # fmt: skip
    # Sent again on the same connection, now that it has a pooled backend connection.
    reply = raw(
        url, wire + wire + b"GET /only-b/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    digests = [hashlib.sha256(b).hexdigest().encode() for b in bodies]
    found = [reply.find(d) for d in digests + digests]
    assert all(i > 0 for i in found) and reply.count(b"HTTP/1.1 200") == 7
    assert found[:3] == sorted(found[:3]) and reply.find(b"B /only-b/3") > max(found)


class ClosingBackend(ThreadedServer):
    """Answers the first request of each connection with keep-alive, and closes the
    connection without answering when a second one comes: the race a pooled
    connection loses when the server's keep-alive timeout strikes as it is reused."""

    def __init__(self) -> None:
        self.answered: list[bytes] = []
        self.dropped: list[bytes] = []
        super().__init__()

    def _request_line(self, conn: socket.socket) -> bytes | None:
        got = read_head(conn, b"")
        return None if got is None else got[0].split(b"\r\n", 1)[0]

    def serve(self, conn: socket.socket) -> None:
        line = self._request_line(conn)
        if line is None:
            return
        self.answered.append(line)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        line = self._request_line(conn)
        if line is not None:
            self.dropped.append(line)  # closed without a response byte


def test_a_reused_connection_closed_before_answering_is_retried_for_get_not_for_post(
    trilb_factory: Factory,
) -> None:
    backend = ClosingBackend()
    port = free_port()
    config = one_server_config(port, backend.port)
    trilb_factory(config, workers=1, ready=1)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client() as client:
            assert client.get(f"{url}/1").status_code == 200
            # Reuses the pooled connection; the server drops it; trilb asks again anew.
            assert client.get(f"{url}/2").status_code == 200
            # Same for a POST: its body went out on the dropped connection: no replay.
            reply = client.post(f"{url}/3", content=b"x" * 10)
        assert reply.status_code == 502
        assert backend.dropped == [b"GET /2 HTTP/1.1", b"POST /3 HTTP/1.1"]
        assert backend.answered == [b"GET /1 HTTP/1.1", b"GET /2 HTTP/1.1"]
    finally:
        backend.stop()


class IdleClosingBackend(ThreadedServer):
    """Answers with keep-alive, and closes a connection idle for 0.2 s (a server's
    keep-alive timeout shorter than the pool's)."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while True:
            try:
                got = read_head(conn, b"")
            except TimeoutError:
                return  # idle: close
            if got is None:
                return
            head, rest = got
            if b"content-length: 3" in head.lower() and len(rest) < 3:
                conn.recv(3 - len(rest))
            self.seen.append(head.split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


def test_a_pooled_connection_the_server_closed_while_idle_is_not_reused(
    trilb_factory: Factory,
) -> None:
    # The third GET reuses a connection checked by the second one, with no check of its
    # own (no epoll event came); the server's close while it idles is such an event, so
    # the POST after it goes out on a new connection. Reused, the POST would get 502: a
    # request with a body is not replayed.
    backend = IdleClosingBackend()
    port = free_port()
    config = one_server_config(port, backend.port)
    trilb_factory(config, workers=1, ready=1)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client() as client:
            for path in ("/1", "/2", "/3"):
                assert client.get(url + path).status_code == 200
            assert backend.connections == 1
            for n in (4, 5):
                time.sleep(0.5)
                assert client.post(f"{url}/{n}", content=b"abc").status_code == 200
                assert client.get(f"{url}/{n}g").status_code == 200
        assert backend.connections == 3
        assert backend.seen[-4:] == [b"POST /4 HTTP/1.1", b"GET /4g HTTP/1.1",
                                     b"POST /5 HTTP/1.1", b"GET /5g HTTP/1.1"]  # fmt: skip
    finally:
        backend.stop()


NOT_FOUND = b"HTTP/1.1 404 x\r\ncontent-length: 0\r\n\r\n"


class ScriptedBackend(ThreadedServer):
    """Sends, for each request path, the raw bytes its script gives (then keeps the
    connection open for more requests, unless the script says close)."""

    def __init__(self, script: dict[bytes, tuple[bytes, bool, bytes]]) -> None:
        """``script``: path -> (response bytes, close after it, bytes sent 0.1 s later)."""
        self.script = script
        self.seen: list[bytes] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while True:
            got = read_head(conn, data)
            if got is None:
                return
            head, data = got
            self.seen.append(head)
            reply, close, later = self.script.get(head.split(b" ")[1], (NOT_FOUND, False, b""))
            conn.sendall(reply)
            if later:
                time.sleep(0.1)
                conn.sendall(later)
            if close:
                return


@pytest.fixture
def scripted(trilb_factory: Factory) -> Iterator[tuple[ScriptedBackend, str]]:
    backend = ScriptedBackend({
        b"/trunc": (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789", True, b""),
        b"/poison": (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", False,
                     b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nPOISON"),
        b"/next": (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext", False, b""),
    })  # fmt: skip
    port = free_port()
    config = one_server_config(port, backend.port, extra="max_body_size = 10\n")
    trilb_factory(config, workers=1, ready=1)
    yield backend, f"http://127.0.0.1:{port}"
    backend.stop()


def test_a_response_cut_short_is_not_patched_with_an_error_status(
    scripted: tuple[ScriptedBackend, str],
) -> None:
    _, url = scripted
    reply = raw(url, b"GET /trunc HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"0123456789"  # then the connection closed: no "502" inside the body


def test_bytes_a_backend_sends_past_its_response_never_reach_the_next_client(
    scripted: tuple[ScriptedBackend, str],
) -> None:
    _, url = scripted
    with httpx.Client() as client:
        assert client.get(f"{url}/poison").text == "ok"
    time.sleep(0.3)  # the unasked-for response is now queued on the pooled connection
    with httpx.Client() as other:
        assert other.get(f"{url}/next").text == "next"


def test_a_chunked_request_body_over_max_body_size_gets_413(
    scripted: tuple[ScriptedBackend, str],
) -> None:
    _, url = scripted
    body = b"".join(b"5\r\n12345\r\n" for _ in range(4)) + b"0\r\n\r\n"
    reply = raw(url, b"POST /next HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert b"HTTP/1.1 413 " in reply


def test_connection_cannot_strip_the_host_header(scripted: tuple[ScriptedBackend, str]) -> None:
    backend, url = scripted
    reply = raw(url, b"GET /next HTTP/1.1\r\nHost: example\r\nConnection: host, close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nhost: example" in backend.seen[-1].lower()


def test_304_has_no_body_and_the_connection_carries_on(web: tuple[Trilb, str]) -> None:
    _, url = web
    with httpx.Client() as client:
        reply = client.get(f"{url}/not-modified")
        assert reply.status_code == 304 and reply.content == b""
        assert reply.headers["etag"] == '"v1"'
        assert client.get(f"{url}/only-b/after").text == "B /only-b/after"


def test_expect_100_continue_is_answered_before_the_body_is_sent(web: tuple[Trilb, str]) -> None:
    _, url = web
    host, port = url.removeprefix("http://").split(":")
    body = b"hello"
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")  # fmt: skip
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        reply = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        while data := s.recv(65536):
            reply += data
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(hashlib.sha256(body).hexdigest().encode())


class KillableBackend(ThreadedServer):
    """Reads requests and never answers; ``kill()`` resets every connection and stops
    listening, as a crashed server would."""

    def __init__(self) -> None:
        self.got_request = threading.Event()
        self.killed = threading.Event()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        if conn.recv(65536):
            self.got_request.set()
        # Hold the connection without a syscall on it, so that kill()'s close is real.
        self.killed.wait(30)

    def kill(self) -> None:
        self.stop()
        for conn in self.conns:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        self.killed.set()


def test_killing_a_backend_mid_request_gives_502_and_later_requests_go_elsewhere(
    trilb_factory: Factory, http_backends: list[Backend]
) -> None:
    doomed = KillableBackend()
    port = free_port()
    trilb_factory(http_config(port, doomed.port, http_backends[1].port), workers=1, ready=1)
    url = f"http://127.0.0.1:{port}"
    result: list[int] = []
    with httpx.Client(timeout=10) as client:
        inflight = threading.Thread(
            target=lambda: result.append(client.get(f"{url}/x").status_code)
        )
        inflight.start()  # round-robin's first pick is the first server: the doomed one
        assert doomed.got_request.wait(5)
        doomed.kill()
        inflight.join(10)
    assert result == [502]
    with httpx.Client() as client:
        names = [client.get(f"{url}/y").text.split()[0] for _ in range(6)]
    assert names == ["B"] * 6


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True,
                          timeout=40, check=True)  # fmt: skip


def test_curl_get_head_post_and_chunked_upload(web: tuple[Trilb, str], tmp_path: Path) -> None:
    _, url = web
    assert curl(f"{url}/only-b/c").stdout == b"B /only-b/c"
    head = curl("-I", f"{url}/h").stdout
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 1234" in head.lower()
    data = tmp_path / "body"
    data.write_bytes(os.urandom(100 << 20))  # the 100 MiB streamed body of issue 3
    expected = hashlib.sha256(data.read_bytes()).hexdigest().encode()
    assert curl("--data-binary", f"@{data}", f"{url}/up").stdout == expected
    chunked = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{data}", f"{url}/up")
    assert chunked.stdout == expected


ROUTES = """
[[frontends.web.routes]]
host = "*.example.com"
path_regex = "^/api/v[0-9]+/"
backend = "b"

[[frontends.web.routes]]
method = ["DELETE", "PUT"]
backend = "b"

[[frontends.web.routes]]
header = { X-Canary = "yes" }
backend = "b"

[[frontends.web.routes]]
cookie = { beta = "1" }
backend = "b"

[[frontends.web.routes]]
query = { tier = "gold" }
backend = "b"

[[frontends.web.routes]]
path_prefix = "/"
backend = "a"
"""


def test_every_route_field_and_the_first_match_rule_end_to_end(
    trilb_factory: Factory, http_backends: list[Backend]
) -> None:
    port = free_port()
    a, b = (x.port for x in http_backends)
    config = http_config(port, a, b).replace("[backends.app]", ROUTES + "\n[backends.app]")
    config += f'\n[backends.a]\nservers = ["127.0.0.1:{a}"]\n'
    trilb_factory(config, workers=1, ready=1)
    url = f"http://127.0.0.1:{port}"

    def who(method: str, path: str, **kw: object) -> str:
        with httpx.Client() as client:
            return client.request(method, f"{url}{path}", **kw).text.split()[0]

    assert who("GET", "/api/v2/x", headers={"Host": "shop.example.com"}) == "B"
    assert who("GET", "/api/v2/x", headers={"Host": "example.com"}) == "A"  # wildcard needs a label
    assert who("GET", "/api/x", headers={"Host": "shop.example.com"}) == "A"  # regex must match
    assert who("GET", "/only-b/first-rule") == "B"  # the first route still wins over "/"
    assert who("GET", "/x", headers={"X-Canary": "yes"}) == "B"
    assert who("GET", "/x", headers={"X-Canary": "no"}) == "A"
    assert who("GET", "/x", headers={"Cookie": "a=2; beta=1"}) == "B"
    assert who("GET", "/x?tier=gold&x=1") == "B"
    assert who("GET", "/x?tier=silver") == "A"
    assert who("GET", "/x") == "A"
    assert who("DELETE", "/x") == "B"


ServePair = Callable[..., tuple[int, list[Any], Trilb]]


@pytest.fixture
def serve_pair(trilb_factory: Factory) -> Iterator[ServePair]:
    """Start two backends of a class and a one-worker trilb in front of them (``extra``:
    more frontend keys); returns trilb's port, the backends (stopped after the test) and
    the trilb."""
    started: list[ThreadedServer] = []

    def start(cls: type[ThreadedServer], extra: str = "") -> tuple[int, list[Any], Trilb]:
        backends = [cls(), cls()]
        started.extend(backends)
        port = free_port()
        config = http_config(port, backends[0].port, backends[1].port, extra)
        return port, backends, trilb_factory(config, workers=1, ready=1)

    yield start
    for backend in started:
        backend.stop()


class OneWriteBackend(ThreadedServer):
    """Keep-alive; answers ``GET /N`` with N bytes, head and body in one write, so
    trilb receives each response whole (the path relayed from the reactor)."""

    delay = 0.0  # before each answer
    first_delay = 0.0  # before the first answer on each connection

    def serve(self, conn: socket.socket) -> None:
        data = b""
        wait = self.first_delay
        while True:
            got = read_head(conn, data)
            if got is None:
                return
            head, data = got
            size = int(head.split(b" ")[1].lstrip(b"/"))
            body = (b"%08d" % size) * (size // 8)
            time.sleep(self.delay + wait)
            wait = 0.0
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


def test_a_client_that_does_not_read_gets_every_pipelined_response_whole(
    serve_pair: ServePair,
) -> None:
    # 12 MB of responses are more than the socket buffers hold while the client does
    # not read: trilb must wait for room (not drop, not buffer without end).
    port, _, _ = serve_pair(OneWriteBackend)
    sizes = [60000 + 8 * i for i in range(200)]
    request = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in sizes)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(request + b"GET /8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(1.0)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    reply = b"".join(chunks)
    for n in [*sizes, 8]:
        head, reply = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"content-length: %d" % (n // 8 * 8) in head
        body, reply = reply[: n // 8 * 8], reply[n // 8 * 8 :]
        assert body == (b"%08d" % n) * (n // 8)
    assert reply == b""


class EarlyHintsBackend(ThreadedServer):
    """Answers every request with 103 Early Hints, then 100 Continue, then 200."""

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while True:
            got = read_head(conn, data)
            if got is None:
                return
            _, data = got
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                         b"HTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # fmt: skip


def test_early_hints_reach_http11_clients_but_not_100_or_http10_clients(
    serve_pair: ServePair,
) -> None:
    port, _, _ = serve_pair(EarlyHintsBackend)
    url = f"http://127.0.0.1:{port}"
    reply = raw(url, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"link: </s.css>; rel=preload\r\n" in reply.lower()
    assert b" 100 " not in reply
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 1 and reply.endswith(b"\r\n\r\nok")
    old = raw(url, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 200 OK\r\n") and old.endswith(b"\r\n\r\nok")


class CloseDelimitedBackend(ThreadedServer):
    """An HTTP/1.0 server: the body of its answer ends when it closes the connection."""

    def serve(self, conn: socket.socket) -> None:
        if read_head(conn, b"") is None:
            return
        conn.sendall(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nhello ")
        time.sleep(0.05)
        conn.sendall(b"world")


def test_a_close_delimited_body_is_chunked_for_http11_and_the_client_stays(
    serve_pair: ServePair,
) -> None:
    port, (backend, other), _ = serve_pair(CloseDelimitedBackend)
    with httpx.Client() as client:
        for _ in range(3):  # one client connection for all three
            response = client.get(f"http://127.0.0.1:{port}/")
            assert response.status_code == 200 and response.text == "hello world"
            assert response.headers["transfer-encoding"] == "chunked"
            assert response.headers.get("connection") != "close"  # trilb keeps it
    assert backend.connections + other.connections == 3
    old = raw(f"http://127.0.0.1:{port}", b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 200 OK\r\n") and old.endswith(b"\r\n\r\nhello world")
    assert b"transfer-encoding" not in old.lower()


class DelayedBackend(OneWriteBackend):
    """Like OneWriteBackend, but each answer waits 0.3 s."""

    delay = 0.3


def test_the_rest_of_a_pipelined_head_sent_while_waiting_is_not_forgotten(
    serve_pair: ServePair,
) -> None:
    # The first read holds request 1 and the start of request 2; the rest of request 2
    # arrives while request 1 waits for its backend. It must be served, not left to time
    # out (header_timeout is 1 s here).
    port, _, _ = serve_pair(DelayedBackend)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /16 HTTP/1.1\r\nHost: x\r\n\r\nGET /24 HTTP/1.1\r\nHo")
        time.sleep(0.1)
        s.sendall(b"st: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while data := s.recv(65536):
            reply += data
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2, reply
    assert reply.endswith(b"00000024" * 3)


def test_a_request_sent_while_a_response_waits_for_room_is_answered(
    serve_pair: ServePair,
) -> None:
    # trilb is stuck writing to a client that does not read when the client's last
    # request arrives: that request must still be read and answered afterwards.
    port, _, _ = serve_pair(OneWriteBackend)
    sizes = [60000 + 8 * i for i in range(200)]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in sizes))
        time.sleep(0.5)
        s.sendall(b"GET /8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)
        chunks = []
        while data := s.recv(1 << 20):
            chunks.append(data)
    reply = b"".join(chunks)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 201
    assert reply.endswith(b"\r\n\r\n00000008")


def test_pipelined_requests_past_one_read_are_all_answered(serve_pair: ServePair) -> None:
    # 3,000 small pipelined GETs (~90 KB, more than one 64 KiB read) arrive while the
    # first request waits for its backend: all of them are in the socket when trilb
    # reads again, and no further edge will come for what one read leaves there.
    port, backends, _ = serve_pair(OneWriteBackend)
    for backend in backends:
        backend.first_delay = 0.3
    request = b"GET /8 HTTP/1.1\r\nHost: x\r\n\r\n" * 2998
    last = b"GET /16 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /8 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        s.sendall(request + last)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    reply = b"".join(chunks)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 3000
    assert reply.endswith(b"\r\n\r\n" + b"00000016" * 2)


def test_an_error_after_a_first_response_still_gets_its_status(web: tuple[Trilb, str]) -> None:
    _, url = web
    bad = b"GET /y HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    reply = raw(url, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n" + bad)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 400 Bad Request\r\n" in reply


def test_a_chunked_response_reaches_an_http10_client_as_plain_bytes(
    web: tuple[Trilb, str],
) -> None:
    _, url = web
    reply = raw(url, b"GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n")
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower()
    assert body == b"one two three"
    # An HTTP/1.1 client gets the chunks as the backend framed them.
    reply = raw(url, b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"transfer-encoding: chunked" in reply.lower()
    assert reply.endswith(b"\r\n0\r\n\r\n")


def test_maxconn_leaves_the_next_client_queued_until_one_ends(
    trilb_factory: Factory, http_backends: list[Backend]
) -> None:
    port = free_port()
    a, b = (x.port for x in http_backends)
    trilb = trilb_factory(http_config(port, a, b, extra="maxconn = 2"), workers=1, ready=1)
    request = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"

    def answered(s: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b" /x"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        return data

    first = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        for s in first:
            s.sendall(request)
            assert answered(s).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            third.sendall(request)  # queued by the kernel: trilb is at maxconn
            third.settimeout(0.5)
            with pytest.raises(TimeoutError):
                third.recv(65536)
            first.pop().close()  # room: the third is accepted and served
            third.settimeout(5)
            assert answered(third).startswith(b"HTTP/1.1 200 ")
        trilb.wait_log("maxconn 2 reached", 5)
    finally:
        for s in first:
            s.close()


class SlowReadingBackend(ThreadedServer):
    """Reads a POST body slowly (64 KiB every 5 ms), then answers its length."""

    def serve(self, conn: socket.socket) -> None:
        got = read_head(conn, b"")
        if got is None:
            return
        head, body = got
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        received = len(body)
        while received < length:
            time.sleep(0.005)
            chunk = conn.recv(65536)
            if not chunk:
                return
            received += len(chunk)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%d" % (len(str(received)),
                                                                            received))  # fmt: skip


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


SIZE = 64 << 20  # far more than trilb may hold at once
BOUND_KIB = 24 << 10  # what its worker may grow by while relaying it


def test_a_slow_client_does_not_make_trilb_buffer_a_large_response(
    serve_pair: ServePair,
) -> None:
    port, _, trilb = serve_pair(OneWriteBackend)
    (worker,) = trilb.children()
    before = rss_kib(worker)
    peak = before
    received = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % SIZE)
        while data := s.recv(65536):
            received += len(data)
            if received % (1 << 20) < len(data):  # about every MiB
                time.sleep(0.02)  # a slow reader
                peak = max(peak, rss_kib(worker))
    assert received > SIZE  # the head and the whole body came through
    assert peak - before < BOUND_KIB, (before, peak)


def test_a_slow_backend_does_not_make_trilb_buffer_a_large_upload(
    serve_pair: ServePair,
) -> None:
    port, _, trilb = serve_pair(SlowReadingBackend, 'body_timeout = "30s"')
    (worker,) = trilb.children()
    before = rss_kib(worker)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(worker))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        body = b"u" * SIZE
        reply = raw(f"http://127.0.0.1:{port}",
                    b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (SIZE, body), timeout=30)  # fmt: skip
    finally:
        done.set()
        watcher.join()
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"%d" % SIZE)
    assert peak[0] - before < BOUND_KIB, (before, peak[0])
