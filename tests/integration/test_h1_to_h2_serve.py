"""HTTP/1.1 clients through trilb to an HTTP/2 backend (``protocol = "h2"``): bodies both
ways, trailers as chunked trailers, content-length kept, HTTP/1.0 clients."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.integration.conftest import ThreadedServer, Trilb, free_port

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


class H2Backend(ThreadedServer):
    """A cleartext HTTP/2 server: answers each stream with "METHOD PATH BYTES" and a
    trailer holding the SHA-256 of the request body; /sized also sends content-length."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[dict[bytes, bytes]] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        h2c = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        heads: dict[int, dict[bytes, bytes]] = {}
        bodies: dict[int, bytes] = {}
        while data := conn.recv(65536):
            for event in h2c.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    heads[event.stream_id] = dict(event.headers)
                    bodies[event.stream_id] = b""
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    h2c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self._answer(h2c, event.stream_id, heads[event.stream_id],
                                 bodies[event.stream_id])  # fmt: skip
            conn.sendall(h2c.data_to_send())

    def _answer(
        self, h2c: h2.connection.H2Connection, sid: int, head: dict[bytes, bytes], body: bytes
    ) -> None:
        with self.lock:
            self.seen.append(head)
        reply = b"%s %s %d" % (head[b":method"], head[b":path"], len(body))
        fields = [(b":status", b"200"), (b"content-type", b"text/plain")]
        if head[b":path"] == b"/sized":
            fields.append((b"content-length", b"%d" % len(reply)))
            h2c.send_headers(sid, fields)
            h2c.send_data(sid, reply, end_stream=True)
            return
        h2c.send_headers(sid, fields)
        h2c.send_data(sid, reply)
        h2c.send_headers(sid, [(b"x-body-sha256", hashlib.sha256(body).hexdigest().encode())],
                         end_stream=True)  # fmt: skip


@pytest.fixture
def bridged(trilb_factory: Factory) -> Iterator[tuple[int, H2Backend]]:
    backend = H2Backend()
    port = free_port()
    trilb_factory(f"""
[global]
grace = "1s"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "svc"

[backends.svc]
protocol = "h2"
servers = ["127.0.0.1:{backend.port}"]
""", workers=1, ready=1)  # fmt: skip
    yield port, backend
    backend.stop()


def read_response(sock: socket.socket) -> bytes:
    """A chunked response, whole (up to its last chunk and trailers)."""
    data = b""
    while not data.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_http11_client_gets_chunked_body_and_trailers_on_one_connection(
    bridged: tuple[int, H2Backend],
) -> None:
    port, backend = bridged
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: h.test\r\nTE: trailers\r\n\r\n")
        first = read_response(sock)
        sock.sendall(b"POST /b HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")  # fmt: skip
        second = read_response(sock)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in first
    assert b"\r\nGET /a 0\r\n" in first
    assert first.endswith(
        b"0\r\nx-body-sha256: %s\r\n\r\n" % hashlib.sha256(b"").hexdigest().encode()
    )
    assert b"POST /b 5" in second
    assert second.endswith(
        b"x-body-sha256: %s\r\n\r\n" % hashlib.sha256(b"abcde").hexdigest().encode()
    )
    assert backend.connections == 1  # both requests on one HTTP/2 connection
    assert backend.seen[0][b":authority"] == b"h.test" and backend.seen[0][b"te"] == b"trailers"
    assert backend.seen[0][b"x-forwarded-proto"] == b"http"


def test_content_length_bodies_and_sized_responses(bridged: tuple[int, H2Backend]) -> None:
    port, _ = bridged
    body = b"z" * (3 << 20)  # past the HTTP/2 windows
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        sized = client.get("/sized")
        assert sized.text == "GET /sized 0" and sized.headers["content-length"] == "12"
        assert client.post("/up", content=body).text == f"POST /up {len(body)}"


def test_an_http10_client_gets_the_body_delimited_by_the_close(
    bridged: tuple[int, H2Backend],
) -> None:
    port, _ = bridged
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\nHost: h.test\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in data
    assert data.endswith(b"\r\n\r\nGET /old 0")
