"""The sticky plugin through a real `trilb serve` with two workers and two backends."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import pytest

from tests.integration.conftest import ThreadedServer, Trilb, free_port

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


class Named(ThreadedServer):
    """An HTTP/1.1 keep-alive backend answering its name; ``stop`` also cuts its open
    connections (a dead server, not one that drains)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        body = json.dumps({"server": self.name}).encode()
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            data = data[data.index(b"\r\n\r\n") + 4 :]
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    def stop(self) -> None:
        super().stop()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def named() -> Iterator[list[Named]]:
    pair = [Named("one"), Named("two")]
    yield pair
    for b in pair:
        b.stop()


def config(port: int, backends: list[Named]) -> str:
    servers = ", ".join(f'{{ address = "{b.address}", name = "{b.name}" }}' for b in backends)
    return f"""
[global]
grace = "1s"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"
plugins = ["sticky"]

[backends.app]
servers = [{servers}]
connect_timeout = "500ms"

[plugins.sticky]
key = "a long random secret for the tests"
"""


def get(port: int, cookie: str | None = None) -> tuple[str, str | None]:
    """One request on a new connection (so each worker gets some): (the server that
    answered, the cookie trilb set, if any)."""
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n".encode())
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    set_cookie = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"set-cookie":
            set_cookie = value.strip().decode().split(";")[0]
    return json.loads(body)["server"], set_cookie


def test_a_session_stays_on_its_server_moves_when_it_dies_and_forgeries_are_ignored(
    trilb_factory: Factory, named: list[Named]
) -> None:
    port = free_port()
    trilb_factory(config(port, named), workers=2)
    first, cookie = get(port)
    assert cookie is not None and cookie.startswith("TRILB_SERVER=")
    assert first not in cookie  # opaque: the server's name is not in it
    seen = [get(port, cookie) for _ in range(1000)]
    assert {server for server, _ in seen} == {first}  # every one, through both workers
    assert {again for _, again in seen} == {None}  # and no new cookie while it holds
    # A tampered cookie is ignored: balanced as usual, and a good cookie issued.
    name, value = cookie.split("=", 1)
    forged = f"{name}={value[:-3]}{'AAA' if value[-3:] != 'AAA' else 'BBB'}"
    servers = set()
    for _ in range(20):
        server, issued = get(port, forged)
        servers.add(server)
        assert issued is not None and issued != forged
    assert servers == {"one", "two"}  # round-robin, not pinned
    # The pinned server dies: the session moves, with a new cookie naming the other.
    dead = next(b for b in named if b.name == first)
    dead.stop()
    moved, fresh = get(port, cookie)
    assert moved != first and fresh is not None
    assert {get(port, fresh)[0] for _ in range(50)} == {moved}
