"""A real `trilb serve` with 2 workers in front of 2 real backends on loopback."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.integration.conftest import Backend, Trilb, free_port, tcp_config

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


def greet(port: int, source: str | None = None, timeout: float = 5.0) -> str:
    """Connect, read the backend's name, check one echo, close. Returns the name."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
    ) as s:
        f = s.makefile("rb")
        name = f.readline().decode().strip()
        s.sendall(b"ping\n")
        assert f.readline() == b"ping\n"
        return name


def test_one_gib_arrives_byte_identical_both_ways(trilb_factory: Factory, backends: list[Backend]):
    port = free_port()
    trilb_factory(tcp_config(port, [b.address for b in backends]))
    total = 1 << 30
    block = os.urandom(1 << 20)
    sent, received = hashlib.sha256(), hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().strip() in (b"A", b"B")

        def upload() -> None:
            for i in range(total // len(block)):
                chunk = i.to_bytes(8, "big") + block[8:]
                sent.update(chunk)
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=upload)
        writer.start()
        got = 0
        while data := f.read1(1 << 20):
            received.update(data)
            got += len(data)
        writer.join()
    assert got == total
    assert received.hexdigest() == sent.hexdigest()


def test_roundrobin_spreads_connections_over_both_servers(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    trilb_factory(tcp_config(port, [b.address for b in backends]))
    seen = Counter(greet(port) for _ in range(40))
    # Each worker alternates A, B, ...; two workers can each be one ahead.
    assert set(seen) == {"A", "B"}
    assert abs(seen["A"] - seen["B"]) <= 2, seen


def test_source_hashing_keeps_each_client_address_on_one_server(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    trilb_factory(tcp_config(port, [b.address for b in backends], balance="source"))
    choice: dict[str, set[str]] = {}
    for i in range(2, 22):
        source = f"127.0.0.{i}"
        choice[source] = {greet(port, source) for _ in range(3)}
    assert all(len(names) == 1 for names in choice.values()), choice
    assert set().union(*choice.values()) == {"A", "B"}


def test_a_stopped_backend_leaves_new_connections_on_the_other(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    trilb_factory(tcp_config(port, [b.address for b in backends]))
    backends[0].stop()
    assert [greet(port) for _ in range(20)] == ["B"] * 20


def test_all_servers_down_closes_the_client_promptly_and_logs_it(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    t = trilb_factory(tcp_config(port, [b.address for b in backends]))
    for b in backends:
        b.stop()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
    assert data == b""
    assert time.monotonic() - start < 2.0
    t.wait_log("no server available", 5)


def test_kill_9_of_a_worker_is_respawned_and_the_port_keeps_answering(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    t = trilb_factory(tcp_config(port, [b.address for b in backends]))
    before = t.children()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    # Connections made while the worker is dead queue on its slot's socket.
    names = [greet(port) for _ in range(30)]
    assert set(names) <= {"A", "B"} and len(names) == 30
    t.wait_ready(3)
    after = t.children()
    assert len(after) == 2 and before[0] not in after and before[1] in after
    assert "killed by SIGKILL" in t.log()


class ClientLoop:
    """Opens, uses and closes connections in a loop until told to stop; counts failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded even if stop() is never called
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                greet(self.port)
                self.ok += 1
            except (OSError, AssertionError) as exc:
                self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_three_reloads_under_a_connection_loop_fail_no_connection(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    t = trilb_factory(tcp_config(port, [b.address for b in backends]))
    loop = ClientLoop(port)
    try:
        for n in range(3):
            t.signal(signal.SIGHUP)
            t.wait_log(f"generation {n + 1}: draining", 20)
            time.sleep(0.3)
        t.wait_ready(8)
    finally:
        loop.stop()
    assert loop.failures == []
    assert loop.ok > 20
    assert len(t.children()) == 2


def test_an_invalid_config_on_reload_is_rejected_and_serving_goes_on(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    t = trilb_factory(tcp_config(port, [b.address for b in backends]))
    workers = t.children()
    t.config_path.write_text(t.config_path.read_text().replace('"pool"\n', '"pol"\n', 1))
    t.signal(signal.SIGHUP)
    t.wait_log("reload rejected", 10)
    assert "frontends.front.default_backend" in t.log()
    assert greet(port) in ("A", "B")
    assert t.children() == workers


def test_sigterm_lets_an_open_connection_finish_then_exits_zero(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    t = trilb_factory(tcp_config(port, [b.address for b in backends]))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        assert f.readline().strip() in (b"A", b"B")
        t.signal(signal.SIGTERM)
        t.wait_log("draining 1 connection", 5)
        # The in-flight connection still relays during the grace period.
        s.sendall(b"still here\n")
        assert f.readline() == b"still here\n"
    assert t.proc.wait(10) == 0
    assert t.children() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_reload_to_fewer_workers_leaves_no_connection_unanswered(
    trilb_factory: Factory, backends: list[Backend]
):
    port = free_port()
    config = tcp_config(port, [b.address for b in backends]).replace(
        "[global]", "[global]\nworkers = 4"
    )
    t = trilb_factory(config, workers=None, ready=4)
    # A connection held open keeps the old generation draining for its whole grace.
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        assert held.makefile("rb").readline().strip() in (b"A", b"B")
        t.config_path.write_text(config.replace("workers = 4", "workers = 1"))
        t.signal(signal.SIGHUP)
        t.wait_log("generation 1: draining", 20)
        # Once every old worker has stopped accepting, the sockets of slots 2-4 are gone
        # (what was queued on them was accepted first) and must not hold connections
        # that nobody accepts.
        t.wait_log("stopped accepting", 10, count=4)
        names = [greet(port, timeout=3) for _ in range(20)]
        assert set(names) <= {"A", "B"} and len(names) == 20
        # The old workers with nothing open exit; the one holding a connection drains.
        deadline = time.monotonic() + 10
        while len(t.children()) != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(t.children()) == 2
    finally:
        held.close()
