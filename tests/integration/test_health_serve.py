"""Active health checks through a real `trilb serve`: the control process checks each
server once for all workers; a server failing its check leaves the rotation of every
worker within interval x fall and returns after rise passes."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.integration.conftest import Backend, Trilb, free_port, tcp_config

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]


class App(BaseHTTPRequestHandler):
    """Answers its name; /healthz answers 200 or 503 as its server's ``healthy`` says."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        if self.path == "/healthz":
            server.checks += 1  # type: ignore[attr-defined]
            status = 200 if server.healthy else 503  # type: ignore[attr-defined]
            body = b"ok" if status == 200 else b"sick"
        else:
            status, body = 200, server.name.encode()  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def apps() -> Iterator[list[ThreadingHTTPServer]]:
    servers = []
    for name in ("one", "two"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), App)
        server.name, server.healthy, server.checks = name, True, 0  # type: ignore[attr-defined]
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


def names(port: int, count: int) -> set[str]:
    """Who answers ``count`` requests, each on a connection of its own (so that both
    workers take some)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(limits=limits) as client:
        return {client.get(f"http://127.0.0.1:{port}/x").text for _ in range(count)}


def settle() -> None:
    """Let every worker read the verdicts (once a tick: at most a second)."""
    time.sleep(1.3)


def test_an_http_check_takes_a_server_out_of_every_worker_and_back(
    trilb_factory: Factory, apps: list[ThreadingHTTPServer]
) -> None:
    port = free_port()
    servers = ", ".join(f'"127.0.0.1:{s.server_address[1]}"' for s in apps)
    trilb = trilb_factory(f"""
[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"

[backends.app]
servers = [{servers}]
pool_max_idle = 0

[backends.app.health]
type = "http"
path = "/healthz"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2
""", workers=2)  # fmt: skip
    trilb.wait_log("control process pid", 5)  # (its ready line)
    assert names(port, 20) == {"one", "two"}
    apps[1].healthy = False  # type: ignore[attr-defined]
    start = time.monotonic()
    trilb.wait_log(f"server 127.0.0.1:{apps[1].server_address[1]} is down (2 http check(s) "
                   "failed, the last: status 503)", 5)  # fmt: skip
    # interval x fall = 0.4 s (+ jitter, + the workers' tick): well within 2 s.
    assert time.monotonic() - start < 2.0
    settle()
    assert names(port, 40) == {"one"}  # every worker: 40 connections over two workers
    apps[1].healthy = True  # type: ignore[attr-defined]
    trilb.wait_log(f"server 127.0.0.1:{apps[1].server_address[1]} is up (2 http check(s) "
                   "passed)", 5)  # fmt: skip
    settle()
    assert names(port, 20) == {"one", "two"}
    # One control process checks for all workers: the checks ran at the interval, not
    # once per worker (about 2 s at 5 a second, x2 if each worker checked).
    assert apps[0].checks < 40  # type: ignore[attr-defined]


def test_a_tcp_check_and_the_control_process_life(trilb_factory: Factory) -> None:
    live, dying = Backend("A"), Backend("B")
    try:
        port = free_port()
        config = tcp_config(port, [live.address, dying.address])
        config += 'health = { interval = "200ms", timeout = "100ms", fall = 1, rise = 1 }\n'
        # No retry and no passive check: a connection sent to B would find it closed.
        config += "retries = 0\neject_after = 0\n"
        trilb = trilb_factory(config, workers=2)
        dying.stop()  # connects are refused from now on
        trilb.wait_log(f"server {dying.address} is down (1 tcp check(s) failed", 5)
        time.sleep(1.2)  # the workers' next tick
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert sock.recv(10) == b"A\n"
        # A control process that dies is forked again, and keeps the verdicts it finds.
        control = int(trilb.log().split("control process pid ")[1].split()[0])
        os.kill(control, signal.SIGKILL)
        trilb.wait_log("control process pid", 10, count=2)
        time.sleep(1.0)
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert sock.recv(10) == b"A\n"
        # A reload starts a new control process with the new generation, which keeps the
        # verdicts: its workers never send to B; the old control process ends with its
        # workers.
        trilb.signal(signal.SIGHUP)
        trilb.wait_log("generation 1: draining", 10)
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert sock.recv(10) == b"A\n"
        # "control process pid" lines: ready, killed, ready again, generation 2's ready,
        # and the exit of generation 1's once its workers are gone.
        trilb.wait_log("control process pid", 10, count=5)
        assert trilb.log().rstrip().count(" exited with status 0") >= 2  # (a worker too)
    finally:
        live.stop()
