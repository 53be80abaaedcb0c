"""Fixtures for the slow tier: a real `trilb serve` process and real backends.

Backends are threaded TCP servers in the test process, bound to 127.0.0.1 port 0 with
the listening socket kept. Each greets with its name, then echoes until EOF.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# A trilb process that has not started (or stopped) in this time is a failure.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


class ThreadedServer:
    """A loopback listening socket (port 0, kept) whose connections each get a thread
    running ``serve``; the base of the test backends."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.bind((host, port))
        self.listener.listen(512)
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve_closing, args=(conn,), daemon=True).start()

    def _serve_closing(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.serve(conn)
            except OSError:
                pass

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop listening: new connections to this address are refused. shutdown()
        first: a close() alone leaves the socket listening while accept() blocks."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


class Backend(ThreadedServer):
    """A greeting echo server: sends ``<name>\\n`` then echoes every byte until EOF."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        super().__init__(host, port)

    def serve(self, conn: socket.socket) -> None:
        buf = bytearray(1 << 20)
        conn.sendall(self.name.encode() + b"\n")
        while n := conn.recv_into(buf):
            conn.sendall(memoryview(buf)[:n])


class HttpOrigin(ThreadedServer):
    """Answers every HTTP/1.1 request with ``status`` (200 unless a test changes it)
    and its name, keeping the connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = b"200 OK"
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            _, _, data = data.partition(b"\r\n\r\n")
            body = self.name.encode()
            conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s"
                         % (self.status, len(body), body))  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Trilb:
    """A running `trilb serve` master, its config file and its stderr log."""

    def __init__(self, tmp: Path, config: str, workers: int | None = 2, ready: int = 2) -> None:
        """``workers=None`` leaves the count to the config; ``ready`` is then how many."""
        self.tmp = tmp
        self.config_path = tmp / "trilb.toml"
        self.config_path.write_text(config)
        self.log_path = tmp / "trilb.log"
        self.pidfile = tmp / "trilb.pid"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "trilb", "serve", "-c", str(self.config_path),
                "--pidfile", str(self.pidfile)]  # fmt: skip
        if workers is not None:
            argv += ["--workers", str(workers)]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_log("started", START_TIMEOUT)
        self.wait_ready(workers or ready)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"trilb exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} x{count} in the log:\n{self.log()}")
            time.sleep(0.05)

    def children(self) -> list[int]:
        path = f"/proc/{self.pid}/task/{self.pid}/children"
        try:
            return [int(p) for p in Path(path).read_text().split()]
        except FileNotFoundError:
            return []

    def wait_ready(self, total: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``total`` workers have been ready since start (respawns included)."""
        self.wait_log(" ready (generation", timeout, count=total)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def tcp_config(port: int, servers: list[str], balance: str = "roundrobin", **fe: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in fe.items())
    listed = ", ".join(f'"{s}"' for s in servers)
    return f"""
[global]
grace = "3s"

[frontends.front]
mode = "tcp"
bind = "127.0.0.1:{port}"
default_backend = "pool"
{extra}
[backends.pool]
balance = "{balance}"
connect_timeout = "1s"
servers = [{listed}]
"""


def http_config(port: int, servers: list[str], head: str = "", backend: str = "") -> str:
    """An http frontend "web" on ``port`` in front of the backend "app" of ``servers``;
    ``head``: what goes before it ([global], [access_log]...), ``backend``: more keys
    of [backends.app]."""
    listed = ", ".join(f'"{s}"' for s in servers)
    return f"""{head}
[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"

[backends.app]
servers = [{listed}]
{backend}"""


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    pair = [Backend("A"), Backend("B")]
    yield pair
    for b in pair:
        b.stop()


@pytest.fixture
def trilb_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Trilb] = []

    def start(config: str, workers: int | None = 2, ready: int = 2) -> Trilb:
        t = Trilb(tmp_path, config, workers, ready)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()
