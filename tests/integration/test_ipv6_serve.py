"""IPv6 wherever an address is accepted: frontends bound on [::1], servers on [::1],
the PROXY header and the limits of an IPv6 client, through a real `trilb serve`."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer

import httpx
import pytest

from tests.integration.conftest import Trilb
from tests.integration.test_plugins_serve import Echo
from tests.integration.test_proxyproto_serve import Reporter, read_line

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


def free_port6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port: int = s.getsockname()[1]
        return port


class Origin6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture
def origin6() -> Iterator[Origin6]:
    server = Origin6(("::1", 0), Echo)
    server.name = "six"  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("http2", [False, True])
def test_http_on_ipv6_both_sides(trilb_factory: Factory, origin6: Origin6, http2: bool) -> None:
    port = free_port6()
    trilb_factory(f"""
[frontends.web]
mode = "http"
bind = "[::1]:{port}"
default_backend = "app"
limits = {{ allow = ["::1/128"] }}

[backends.app]
servers = ["[::1]:{origin6.server_address[1]}"]
""", workers=1)  # fmt: skip
    with httpx.Client(http1=not http2, http2=http2) as client:
        r = client.get(f"http://[::1]:{port}/six")
    assert r.status_code == 200
    seen = json.loads(r.text)
    assert seen["server"] == "six" and seen["headers"]["x-forwarded-for"] == "::1"
    assert seen["headers"]["x-forwarded-host"] == f"[::1]:{port}"


def test_tcp_on_ipv6_with_a_proxy_header_for_the_server(trilb_factory: Factory) -> None:
    reporter = Reporter("::1")
    port = free_port6()
    try:
        trilb_factory(f"""
[frontends.db]
mode = "tcp"
bind = "[::1]:{port}"
default_backend = "pool"

[backends.pool]
servers = ["{reporter.address}"]
send_proxy = "v1"
""", workers=1)  # fmt: skip
        with socket.create_connection(("::1", port), timeout=5) as sock:
            client_port = sock.getsockname()[1]
            assert read_line(sock) == f"v1 ::1:{client_port} -> ::1:{port}\n".encode()
    finally:
        reporter.stop()
