"""Backends given as ``dns:NAME:PORT``, through a running trilb: the control process
asks a real DNS server (dnslib, on loopback) at the [dns] interval, and the workers
follow its answers: servers join, leave, and stay when the DNS server stops answering."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer

from tests.integration.conftest import Backend, Trilb, free_port
from tests.integration.test_udp_serve import free_udp_port

pytestmark = pytest.mark.slow


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers A questions for one name from ``addresses`` (which tests change);
    stays silent while ``mute``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.addresses: list[str] = []
        self.mute = False
        self.delay = 0.0  # seconds before each answer
        self.first_asked: float | None = None  # (monotonic)
        self.questions = 0
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord | None:
        if self.first_asked is None:
            self.first_asked = time.monotonic()
        time.sleep(self.delay)
        with self.lock:
            self.questions += 1
            if self.mute:
                return None
            reply = request.reply()
            if str(request.q.qname).rstrip(".") == self.name and request.q.qtype == QTYPE.A:
                for address in self.addresses:
                    reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=5))
            return reply


@pytest.fixture
def zone() -> Iterator[tuple[Zone, int]]:
    resolver = Zone("app.test")
    server = DNSServer(resolver, port=free_udp_port(), address="127.0.0.1")
    server.start_thread()
    yield resolver, server.server.server_address[1]
    server.stop()


def dns_config(head: str, dns_port: int, port: int, server_port: int, dns: str = "") -> str:
    """A TCP frontend on ``port`` in front of ``dns:app.test:server_port``, its [dns]
    asking the server on ``dns_port``; ``head`` and ``dns``: more lines for [global]
    and [dns]; what follows the result goes into [backends.app]."""
    return f"""
[global]
{head}

[dns]
nameservers = ["127.0.0.1:{dns_port}"]
{dns}

[frontends.front]
mode = "tcp"
bind = "127.0.0.1:{port}"
default_backend = "app"

[backends.app]
servers = ["dns:app.test:{server_port}"]
"""


def greetings(port: int, count: int) -> set[str]:
    names = set()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            names.add(conn.recv(16).decode().strip())
    return names


def until(check: Callable[[], bool], limit: float = 6.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_dns_servers_follow_the_answers(
    trilb_factory: Callable[..., Trilb], zone: tuple[Zone, int]
) -> None:
    resolver, dns_port = zone
    # Two servers on one port, on two loopback addresses: what a headless service gives.
    two = Backend("two", "127.0.0.2")
    three = Backend("three", "127.0.0.3", two.port)
    resolver.addresses = ["127.0.0.2"]
    port = free_port()
    config = dns_config('grace = "2s"', dns_port, port, two.port,
                        'interval = "500ms"\ntimeout = "300ms"') + "dns_slots = 3\n"  # fmt: skip
    trilb = trilb_factory(config, workers=2, ready=3)
    until(lambda: greetings(port, 6) == {"two"})
    trilb.wait_log("backend app: dns app.test: 127.0.0.2 added (app.test-1)", 5)
    resolver.addresses = ["127.0.0.2", "127.0.0.3"]  # a server joins
    until(lambda: greetings(port, 12) == {"two", "three"})
    resolver.addresses = ["127.0.0.3"]  # one leaves
    trilb.wait_log("127.0.0.2 left (app.test-1)", 5)
    until(lambda: greetings(port, 8) == {"three"})
    resolver.mute = True  # the DNS server stops answering: what is known stays
    trilb.wait_log("cannot resolve app.test", 5)
    assert "keeping its 1 address(es)" in trilb.log()
    assert greetings(port, 6) == {"three"}
    resolver.mute = False
    resolver.addresses = []  # NXDOMAIN-like: no address, no server
    until(lambda: "127.0.0.3 left" in trilb.log())
    time.sleep(1.1)  # (the workers take it within a tick)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        assert conn.recv(16) == b""  # no server: L4 closes
    two.stop()
    three.stop()


def test_at_a_first_start_clients_wait_for_the_first_answer_instead_of_being_refused(
    trilb_factory: Callable[..., Trilb], zone: tuple[Zone, int]
) -> None:
    resolver, dns_port = zone
    two = Backend("two", "127.0.0.2")
    resolver.addresses = ["127.0.0.2"]
    resolver.delay = 2.0
    port = free_port()
    config = dns_config("workers = 1", dns_port, port, two.port, 'timeout = "4s"')
    trilb_factory(config, workers=None, ready=0)
    # Connected while the first answer is still on its way: the connection waits in the
    # listen queue until the worker has the server (it used to find none and close).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        connected = time.monotonic()
        assert conn.recv(16) == b"two\n"
    asked = resolver.first_asked
    assert asked is not None and connected < asked + resolver.delay, "answered before"
    two.stop()


def test_a_bad_dns_server_entry_is_a_config_error(tmp_path: object) -> None:
    from trilb.config.load import parse_config
    from trilb.errors import ConfigError

    base = {"frontends": {"w": {"mode": "tcp", "bind": "127.0.0.1:1", "default_backend": "b"}}}
    for spec, says in (("dns:app.test", "dns:NAME:PORT"), ("dns:bad name:80", "bad name"),
                       ("dns:app.test:0", "dns:NAME:PORT")):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            parse_config({**base, "backends": {"b": {"servers": [spec]}}})
        assert "backends.b.servers[0].address" in str(caught.value), caught.value
        assert says in str(caught.value) or "label" in str(caught.value), caught.value
