"""The PROXY protocol through a real `trilb serve`: accepted from raw clients and from
HAProxy (`send-proxy-v2`), sent to a backend that reads it and to nginx
(`listen ... proxy_protocol`, which answers `$proxy_protocol_addr`)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Backend, ThreadedServer, Trilb, free_port
from tests.integration.test_plugins_serve import echoes  # (origins answering their headers)
from trilb.l4.proxyproto import build_v1, build_v2, parse

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]
__all__ = ["echoes"]  # a fixture used by name


class Reporter(ThreadedServer):
    """Reads the PROXY header a connection starts with and answers what it said
    ("v1 203.0.113.9:4000 -> 10.0.0.1:80\\n"), then echoes the rest."""

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while (found := parse(data)) is None:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        info, n = found
        src, dst = info.source, info.destination
        conn.sendall(b"v%d %s:%d -> %s:%d\n" % (info.version, src[0].encode(), src[1],  # type: ignore[index]
                                                dst[0].encode(), dst[1]))  # type: ignore[index]  # fmt: skip
        rest = data[n:]
        while True:
            if rest:
                conn.sendall(rest)
            rest = conn.recv(4096)
            if not rest:
                return


@pytest.fixture
def reporter() -> Iterator[Reporter]:
    server = Reporter()
    yield server
    server.stop()


def tcp_proxy_config(port: int, server: str, frontend: str = "", backend: str = "") -> str:
    return f"""
[frontends.front]
mode = "tcp"
bind = "127.0.0.1:{port}"
default_backend = "pool"
{frontend}

[backends.pool]
servers = ["{server}"]
{backend}
"""


def read_line(sock: socket.socket, then: int = 0) -> bytes:
    """A line, and ``then`` bytes after it (they may come in the same segment)."""
    data = b""
    while b"\n" not in data or len(data.partition(b"\n")[2]) < then:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_names_the_client_to_the_server(
    trilb_factory: Factory, reporter: Reporter, version: str
) -> None:
    port = free_port()
    trilb_factory(tcp_proxy_config(port, reporter.address, backend=f'send_proxy = "{version}"'),
                  workers=1)  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=("127.0.0.5", 0)) as sock:  # fmt: skip
        client_port = sock.getsockname()[1]
        line = read_line(sock)
        assert line == f"{version} 127.0.0.5:{client_port} -> 127.0.0.1:{port}\n".encode()
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"


@pytest.mark.parametrize(
    "header",
    [build_v1(("203.0.113.9", 4000), ("198.51.100.1", 80)),
     build_v2(("203.0.113.9", 4000), ("198.51.100.1", 80))],
    ids=["v1", "v2"],
)  # fmt: skip
def test_accept_proxy_takes_the_client_from_the_header(
    trilb_factory: Factory, reporter: Reporter, header: bytes
) -> None:
    port = free_port()
    trilb_factory(tcp_proxy_config(port, reporter.address, "accept_proxy = true",
                                   'send_proxy = "v1"'), workers=1)  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(header + b"hello")  # the data right behind the header
        # The original client and destination, passed on; then the data.
        assert read_line(sock, 5) == b"v1 203.0.113.9:4000 -> 198.51.100.1:80\nhello"


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no header at all
        b"PROXY TCP4 203.0.113.9 10.0.0.1 4000\r\nhello",  # a field missing
        b"PROXY TCP4 203.0.113.999 10.0.0.1 4000 80\r\n",  # not an address
        b"PROXY garbage garbage garbage garbage\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04\x01\x02\x03\x04",  # length below the addresses
        b"\r\n\r\n\x00\r\nQUIZ\n\x21\x11\x00\x0c",  # wrong signature
        b"PROXY TCP4 203.0.113.9 10.0.0.1 4000 80",  # truncated: never ends (timeout)
    ],
    ids=["none", "fields", "address", "garbage", "v2-length", "v2-signature", "truncated"],
)
def test_a_bad_or_missing_header_closes_with_nothing_forwarded(
    trilb_factory: Factory, data: bytes
) -> None:
    backend = Backend("A")
    port = free_port()
    trilb = trilb_factory(tcp_proxy_config(port, backend.address,
                                           'accept_proxy = true\naccept_proxy_timeout = "500ms"'),
                          workers=1)  # fmt: skip
    try:
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(data)
            assert sock.recv(100) == b""  # closed, no greeting of the backend
        assert time.monotonic() - start < 3
        assert backend.connections == 0
        trilb.wait_log("refused", 5)
        assert "frontend front: connection from 127.0.0.1 refused" in trilb.log()
    finally:
        backend.stop()


def http_proxy_config(port: int, origin: int, extra: str = "") -> str:
    return f"""
[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"
accept_proxy = true
{extra}

[backends.app]
servers = ["127.0.0.1:{origin}"]
"""


def fetch(port: int, header: bytes) -> bytes:
    """A request behind ``header``; what came back until the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(header + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_an_http_frontend_behind_a_balancer_forwards_the_real_client(
    trilb_factory: Factory, echoes: list[int]
) -> None:
    port = free_port()
    trilb_factory(http_proxy_config(port, echoes[0]), workers=1)
    headers = [(build_v1(("203.0.113.9", 4000), ("127.0.0.1", port)), "203.0.113.9"),
               (build_v2(("2001:db8::7", 4000), ("::1", port)), "2001:db8::7")]  # fmt: skip
    for header, client in headers:
        out = fetch(port, header)
        assert out.startswith(b"HTTP/1.1 200")
        assert f'"x-forwarded-for": "{client}"'.encode() in out
    with pytest.raises(httpx.HTTPError):  # no header: closed unanswered
        httpx.get(f"http://127.0.0.1:{port}/")


def run_foreground(argv: list[str], log: Path, port: int) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{argv[0]} did not start: {log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def test_haproxy_sending_proxy_v2_to_trilb(
    trilb_factory: Factory, reporter: Reporter, tmp_path: Path
) -> None:
    port, front = free_port(), free_port()
    trilb_factory(tcp_proxy_config(port, reporter.address, "accept_proxy = true",
                                   'send_proxy = "v1"'), workers=1)  # fmt: skip
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(f"""
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s
listen front
  bind 127.0.0.1:{front}
  server trilb 127.0.0.1:{port} send-proxy-v2
""")
    haproxy = run_foreground([HAPROXY, "-db", "-f", str(conf)], tmp_path / "haproxy.log", front)
    try:
        with socket.create_connection(("127.0.0.1", front), timeout=5,
                                      source_address=("127.0.0.6", 0)) as sock:  # fmt: skip
            client_port = sock.getsockname()[1]
            line = read_line(sock)
            # HAProxy told trilb who connected to it (and where), trilb told the server.
            assert line == f"v1 127.0.0.6:{client_port} -> 127.0.0.1:{front}\n".encode()
    finally:
        stop(haproxy)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_trilb_sending_proxy_to_nginx(trilb_factory: Factory, tmp_path: Path, version: str) -> None:
    port, origin = free_port(), free_port()
    conf = tmp_path / "nginx.conf"
    temps = "".join(f"  {k}_temp_path {tmp_path / k};\n"
                    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    conf.write_text(f"""
daemon off;
master_process off;
pid {tmp_path / "nginx.pid"};
error_log {tmp_path / "nginx-error.log"};
events {{ worker_connections 64; }}
http {{
  access_log off;
{temps}
  server {{
    listen 127.0.0.1:{origin} proxy_protocol;
    location / {{ return 200 "$proxy_protocol_addr $proxy_protocol_port\\n"; }}
  }}
}}
""")
    nginx = run_foreground([NGINX, "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")],
                           tmp_path / "nginx.log", origin)  # fmt: skip
    try:
        trilb_factory(tcp_proxy_config(port, f"127.0.0.1:{origin}",
                                       backend=f'send_proxy = "{version}"'), workers=1)  # fmt: skip
        with socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=("127.0.0.7", 0)) as sock:  # fmt: skip
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = b""
            while chunk := sock.recv(4096):
                out += chunk
            assert out.startswith(b"HTTP/1.1 200")
            assert out.endswith(f"127.0.0.7 {sock.getsockname()[1]}\n".encode())
    finally:
        stop(nginx)


# --- per-source limits (they use the PROXY header's client, when there is one) ------------


def test_limits_on_a_tcp_frontend(trilb_factory: Factory) -> None:
    backend = Backend("A")
    port = free_port()
    limits = ('limits = { deny = ["127.0.0.9/32"], max_conn_per_source = 2, '
              "rate_per_source = 1, burst_per_source = 4 }")  # fmt: skip
    trilb = trilb_factory(tcp_proxy_config(port, backend.address, limits), workers=1)
    try:

        def connect(source: str) -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=5,
                                            source_address=(source, 0))  # fmt: skip

        denied = connect("127.0.0.9")
        assert denied.recv(10) == b""  # closed: the deny list
        held = [connect("127.0.0.3"), connect("127.0.0.3")]
        assert [s.recv(10) for s in held] == [b"A\n", b"A\n"]
        third = connect("127.0.0.3")
        assert third.recv(10) == b""  # over max_conn_per_source
        other = connect("127.0.0.4")  # another source is not held back
        assert other.recv(10) == b"A\n"
        for s in (denied, third, other, *held):
            s.close()
        # The bucket of 127.0.0.5 (4, one more a second): four connections in a row
        # pass (one open at a time), the fifth within that second does not.
        for _ in range(4):
            with connect("127.0.0.5") as sock:
                assert sock.recv(10) == b"A\n"
            time.sleep(0.05)  # (closed before the next: max_conn_per_source is 2)
        with connect("127.0.0.5") as sock:
            assert sock.recv(10) == b""
        # One line for all these refusals: the first; the others are counted in the next.
        trilb.wait_log("refused: in deny", 5)
        assert "over max_conn" not in trilb.log()
        assert backend.connections == 7
    finally:
        backend.stop()


def test_limits_use_the_proxied_client_on_an_http_frontend(
    trilb_factory: Factory, echoes: list[int]
) -> None:
    port = free_port()
    limits = 'limits = { allow = ["203.0.113.0/24", "2001:db8::/32"] }'
    trilb_factory(http_proxy_config(port, echoes[0], limits), workers=1)
    to = ("127.0.0.1", port)
    assert fetch(port, build_v2(("203.0.113.7", 1000), to)).startswith(b"HTTP/1.1 200")
    assert fetch(port, build_v2(("2001:db8::7", 1000), to)).startswith(b"HTTP/1.1 200")
    assert fetch(port, build_v2(("198.51.100.7", 1000), to)) == b""  # (not on the list)


def test_accept_proxy_from_limits_who_may_send_a_header(
    trilb_factory: Factory, reporter: Reporter
) -> None:
    port = free_port()
    frontend = 'accept_proxy = true\naccept_proxy_from = ["127.0.0.8/32"]'
    trilb = trilb_factory(tcp_proxy_config(port, reporter.address, frontend, 'send_proxy = "v1"'),
                          workers=1)  # fmt: skip
    header = build_v1(("203.0.113.9", 4000), ("198.51.100.1", 80))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(header)  # from 127.0.0.1: not a trusted balancer, whatever it claims
        assert sock.recv(100) == b""
    trilb.wait_log("connection from 127.0.0.1 refused: not in accept_proxy_from", 5)
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=("127.0.0.8", 0)) as sock:  # fmt: skip
        sock.sendall(header)
        assert read_line(sock) == b"v1 203.0.113.9:4000 -> 198.51.100.1:80\n"
