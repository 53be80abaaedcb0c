"""A real `trilb serve` with `mode = "udp"` frontends: resolver-like echo backends,
many client flows through two workers, `dig` against a DNS server (dnslib) through
trilb, idle expiry, the flow cap, source hashing, ICMP errors, limits and IPv6."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer

from tests.integration.conftest import Trilb

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


class Echo:
    """A UDP server answering each datagram with ``NAME:`` + the datagram, and
    recording the client addresses it saw (trilb's flow sockets)."""

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.name = name.encode()
        self.peers: set[tuple[str, int]] = set()
        self.count = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            self.count += 1
            self.peers.add(peer[:2])
            self.sock.sendto(self.name + b":" + data, peer)

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def echoes() -> Iterator[list[Echo]]:
    pair = [Echo("A"), Echo("B")]
    yield pair
    for e in pair:
        e.stop()


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def udp_config(port: int, servers: list[str], frontend: str = "", backend: str = "",
               host: str = "127.0.0.1") -> str:  # fmt: skip
    listed = ", ".join(f'"{s}"' for s in servers)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"""
[global]
grace = "2s"

[frontends.dns]
mode = "udp"
bind = "{bind}"
default_backend = "pool"
{frontend}

[backends.pool]
servers = [{listed}]
{backend}
"""


def client(host: str = "127.0.0.1", source: str | None = None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((source or host, 0))
    sock.settimeout(3)
    return sock


def test_many_flows_through_two_workers_each_get_their_own_replies(
    trilb_factory: Factory, echoes: list[Echo]
) -> None:
    port = free_udp_port()
    trilb_factory(udp_config(port, [e.address for e in echoes]), workers=2)
    flows = [client() for _ in range(200)]
    try:
        # 200 flows x 50 datagrams = 10,000, ten rounds with every flow in each.
        for rnd in range(50):
            for i, sock in enumerate(flows):
                sock.sendto(b"q %d %d" % (i, rnd), ("127.0.0.1", port))
            for i, sock in enumerate(flows):
                reply = sock.recv(100)
                assert reply[2:] == b"q %d %d" % (i, rnd), reply  # its own answer, in order
        assert echoes[0].count + echoes[1].count == 10_000
        # Flows spread over both servers (round robin per flow, over two workers).
        assert echoes[0].count >= 2_000 and echoes[1].count >= 2_000
        # One upstream socket per flow: 200 distinct sources at the servers.
        assert len(echoes[0].peers) + len(echoes[1].peers) == 200
    finally:
        for sock in flows:
            sock.close()


class Resolver(BaseResolver):  # type: ignore[misc]
    """Answers every A question with 192.0.2.53."""

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.53"), ttl=60))
        return reply


@pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (make tools installs it)")
def test_dig_through_trilb_gets_its_answer(trilb_factory: Factory) -> None:
    server = DNSServer(Resolver(), port=free_udp_port(), address="127.0.0.1")
    server.start_thread()
    try:
        port = free_udp_port()
        trilb_factory(udp_config(port, [f"127.0.0.1:{server.server.server_address[1]}"]),
                      workers=2)  # fmt: skip
        out = subprocess.run(
            ["dig", "+short", "+tries=1", "+time=3", "-p", str(port), "@127.0.0.1",
             "www.example.test", "A"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
        assert out.strip() == "192.0.2.53"
    finally:
        server.stop()


def test_idle_flows_end_and_the_flow_cap_evicts_the_oldest(
    trilb_factory: Factory, echoes: list[Echo]
) -> None:
    port = free_udp_port()
    config = udp_config(port, [echoes[0].address], 'idle_timeout = "300ms"\nmax_flows = 3')
    trilb = trilb_factory(config, workers=1)
    socks = [client() for _ in range(4)]
    try:
        for sock in socks[:3]:
            sock.sendto(b"x", ("127.0.0.1", port))
            assert sock.recv(10) == b"A:x"
        socks[3].sendto(b"y", ("127.0.0.1", port))  # a 4th flow: the oldest goes
        assert socks[3].recv(10) == b"A:y"
        trilb.wait_log("max_flows 3 reached", 5)
        # The evicted flow's next datagram makes a new flow (a new upstream socket).
        before = len(echoes[0].peers)
        socks[0].sendto(b"z", ("127.0.0.1", port))
        assert socks[0].recv(10) == b"A:z"
        assert len(echoes[0].peers) == before + 1
        # Idle flows end: after the timeout, each client's datagram opens a new flow.
        time.sleep(1.5)
        before = len(echoes[0].peers)
        socks[1].sendto(b"w", ("127.0.0.1", port))
        assert socks[1].recv(10) == b"A:w"
        assert len(echoes[0].peers) == before + 1
    finally:
        for sock in socks:
            sock.close()


def test_source_hashing_keeps_a_client_on_one_server_across_flows(
    trilb_factory: Factory, echoes: list[Echo]
) -> None:
    port = free_udp_port()
    trilb_factory(udp_config(port, [e.address for e in echoes], 'idle_timeout = "200ms"',
                             'balance = "source"'), workers=1)  # fmt: skip
    for source in ("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"):
        seen = set()
        for _ in range(3):  # three flows from three ports, with a flow expiry between
            with client(source=source) as sock:
                sock.sendto(b"q", ("127.0.0.1", port))
                seen.add(sock.recv(10)[:1])
            time.sleep(0.5)
        assert len(seen) == 1, (source, seen)


def test_a_server_answering_with_icmp_errors_is_left_out(
    trilb_factory: Factory, echoes: list[Echo]
) -> None:
    dead = free_udp_port()  # nobody listens: the kernel answers port unreachable
    port = free_udp_port()
    trilb = trilb_factory(udp_config(port, [f"127.0.0.1:{dead}", echoes[0].address]),
                          workers=1)  # fmt: skip
    answers = []
    for _ in range(6):
        with client() as sock:
            sock.settimeout(0.5)
            sock.sendto(b"q", ("127.0.0.1", port))
            try:
                answers.append(sock.recv(10))
            except TimeoutError:
                answers.append(b"")  # (the datagram sent to the dead server is lost)
    trilb.wait_log(f"server 127.0.0.1:{dead} out for 5s: frontend dns: Connection refused", 5)
    assert answers[-4:] == [b"A:q"] * 4  # once it is known, the dead server gets nothing


def test_limits_drop_a_denied_source(trilb_factory: Factory, echoes: list[Echo]) -> None:
    port = free_udp_port()
    config = udp_config(port, [echoes[0].address], 'limits = { deny = ["127.0.0.66/32"] }')
    trilb = trilb_factory(config, workers=1)
    with client(source="127.0.0.66") as sock:
        sock.settimeout(0.5)
        sock.sendto(b"q", ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            sock.recv(10)
    with client() as sock:
        sock.sendto(b"q", ("127.0.0.1", port))
        assert sock.recv(10) == b"A:q"
    trilb.wait_log("datagram from 127.0.0.66 dropped: in deny", 5)
    assert echoes[0].count == 1


def test_udp_over_ipv6(trilb_factory: Factory) -> None:
    echo = Echo("6", "::1")
    try:
        port = free_udp_port("::1")
        trilb_factory(udp_config(port, [echo.address], host="::1"), workers=1)
        with client("::1") as sock:
            sock.sendto(b"six", ("::1", port))
            assert sock.recv(10) == b"6:six"
    finally:
        echo.stop()
