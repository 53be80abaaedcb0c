"""Mixed HTTP/1.1 traffic through a real trilb for a few seconds, every answer checked.

Pipelined batches of GETs (small and large, Content-Length or chunked, head and body in
one write or two), POSTs with Content-Length or chunked bodies, clients that send in
small pieces or read through a small receive buffer: the reactor's fast path and the
hand-over to tasks interleave on the same connections. Bounded in time and count.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import ThreadedServer, Trilb, free_port

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]
DURATION = 4.0  # seconds of traffic
CLIENTS = 8
MAX_BATCHES = 400  # per client, whatever the speed


class MixedBackend(ThreadedServer):
    """GET /N: N bytes (Content-Length, in one write or two); GET /c/N: N bytes chunked;
    POST: answers the length of the body it read (Content-Length or chunked)."""

    def serve(self, conn: socket.socket) -> None:
        rnd = random.Random(conn.fileno())
        reader = Reader(conn)
        while True:
            head = reader.head()
            if head is None:
                return
            lines = head.split(b"\r\n")
            method, path, _ = lines[0].split(b" ")
            fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
            if b"content-length" in fields:
                received = len(reader.take(int(fields[b"content-length"])))
            elif fields.get(b"transfer-encoding") == b"chunked":
                received = len(reader.chunked())
            else:
                received = 0
            if method == b"POST":
                body = b"%d" % received
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            elif path.startswith(b"/c/"):
                body = b"c" * int(path[3:])
                conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for i in range(0, len(body), 7000):
                    piece = body[i : i + 7000]
                    conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                conn.sendall(b"0\r\n\r\n")
            else:
                body = b"g" * int(path[1:])
                head_out = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
                if rnd.random() < 0.5:
                    conn.sendall(head_out + body)
                else:
                    conn.sendall(head_out)
                    conn.sendall(body)


class Reader:
    """Buffered reads of one HTTP/1.1 stream (either side)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(self.buf[:200])
        self.buf += data

    def head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buf:
            try:
                self._more()
            except EOFError:
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                self._more()
            line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(line, 16)
            data = self.take(size + 2)
            assert data[size:] == b"\r\n", data[-10:]
            body += data[:size]
            if size == 0:
                return body  # no trailers are sent here: that CRLF ended the body

    def response(self) -> bytes:
        head = self.head()
        assert head is not None and head.startswith(b"HTTP/1.1 200 "), head
        low = head.lower()
        if b"transfer-encoding: chunked" in low:
            return self.chunked()
        return self.take(int(low.split(b"content-length: ")[1].split(b"\r\n")[0]))


def client(port: int, seed: int, until: float, checked: list[int], errors: list[str]) -> None:
    rnd = random.Random(seed)
    batches = 0
    while time.monotonic() < until and batches < MAX_BATCHES:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            if rnd.random() < 0.3:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            reader = Reader(sock)
            for _ in range(rnd.randint(1, 6)):
                batches += 1
                out, expected = batch(rnd)
                slow = rnd.random() < 0.3
                # Sent from a thread: a client that only reads after sending everything
                # would deadlock on large bodies whatever the proxy.
                sender = threading.Thread(target=send, args=(sock, out, slow))
                sender.start()
                try:
                    for want in expected:
                        got = reader.response()
                        if got != want:
                            errors.append(f"seed {seed}: {len(got)} bytes, expected {len(want)}")
                            return
                        checked[0] += 1
                except (OSError, EOFError, AssertionError) as exc:
                    errors.append(f"seed {seed}: {exc!r}"[:300])
                    return
                finally:
                    sender.join()


def batch(rnd: random.Random) -> tuple[bytes, list[bytes]]:
    out = b""
    expected = []
    for _ in range(rnd.randint(1, 4)):
        kind = rnd.random()
        if kind < 0.5:
            n = rnd.choice([0, 1, 64, 1000, 30000, 70000, 200000])
            out += b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n
            expected.append(b"g" * n)
        elif kind < 0.65:
            n = rnd.choice([1, 5000, 100000])
            out += b"GET /c/%d HTTP/1.1\r\nHost: x\r\n\r\n" % n
            expected.append(b"c" * n)
        elif kind < 0.85:
            n = rnd.choice([0, 10, 70000, 300000])
            out += b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (n, b"p" * n)
            expected.append(b"%d" % n)
        else:
            n = rnd.choice([3, 40000])
            out += (b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"%x\r\n%s\r\n0\r\n\r\n" % (n, b"q" * n))  # fmt: skip
            expected.append(b"%d" % n)
    return out, expected


def send(sock: socket.socket, data: bytes, slow: bool) -> None:
    try:
        if slow:
            for i in range(0, len(data), 1000):
                sock.sendall(data[i : i + 1000])
        else:
            sock.sendall(data)
    except OSError:
        pass  # the reading side reports what went wrong


def test_mixed_pipelined_traffic_gets_every_answer_whole_and_in_order(
    trilb_factory: Factory,
) -> None:
    backends = [MixedBackend(), MixedBackend()]
    try:
        port = free_port()
        trilb = trilb_factory(
            f'[frontends.web]\nmode = "http"\nbind = "127.0.0.1:{port}"\n'
            'default_backend = "app"\n[backends.app]\nservers = '
            f'["127.0.0.1:{backends[0].port}", "127.0.0.1:{backends[1].port}"]\n',
            workers=2,
        )
        checked = [0]
        errors: list[str] = []
        until = time.monotonic() + DURATION
        threads = [
            threading.Thread(target=client, args=(port, seed, until, checked, errors))
            for seed in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=DURATION + 30)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert checked[0] > 200  # a few seconds of traffic really ran
        log = trilb.log()
        assert "Traceback" not in log
        assert re.search(r": 5\d\d: ", log) is None  # no error status was answered
    finally:
        for backend in backends:
            backend.stop()
