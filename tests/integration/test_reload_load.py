"""Reloads under load: 50 HTTP/1.1 keep-alive clients, 20 HTTP/2 (h2c) clients and 20
WebSocket clients run against a two-worker trilb while it gets 5 SIGHUPs in about 30 s.
No request may fail and no WebSocket may end otherwise than with the drain's 1001.

What a draining old generation does to each kind of client, and what the clients here
accept as normal (anything else is a failure, listed with its client and time):

- HTTP/1.1: a response in flight ends with ``Connection: close``; the client opens a new
  connection. An idle keep-alive connection is closed at once: a client that finds it
  closed (readable at EOF) before reusing it opens a new one, as urllib3 and httpcore
  do. A request that crossed that close on the wire meets EOF (the FIN came first) with
  no byte of response: RFC 9112 9.3.1 lets a client retry an idempotent request then,
  and it is counted apart ("unanswered") and checked never to have reached an origin.
  A reset instead (no FIN before it) means trilb closed the connection with the request
  already in its receive buffer, unread: that request was dropped, a failure.
- HTTP/2: GOAWAY (NO_ERROR); streams up to its last-stream-id finish, and the client
  opens a new connection for the next request. A stream above last-stream-id, or reset
  with REFUSED_STREAM, was not processed (RFC 9113 6.8 and 8.7): the client sends it
  again on a new connection, as clients do, and counts it apart ("refused"). A stream
  at or below last-stream-id that does not finish, any other reset, a GOAWAY with an
  error, or a connection cut without a GOAWAY is a failure.
- WebSocket: Close 1001 near the grace deadline (in time for the close handshake); the
  client reconnects. A message whose echo had not come back
  when the 1001 arrived is not counted (a peer going away ends what is in flight).

Clients are threads with bounded loops (count and time); origins are threaded servers
on port 0 that answer HTTP/1.1 keep-alive and echo WebSocket messages (wsproto).
"""

from __future__ import annotations

import contextlib
import io
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO

import hpack
import pytest
import wsproto
import wsproto.events
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from tests.integration.conftest import ThreadedServer, Trilb, free_port, http_config

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]

GRACE = 3.0  # global.grace: old generations end (and WebSockets with them) within it
H1_CLIENTS = 50
H2_CLIENTS = 20
WS_CLIENTS = 20
RELOADS = 5
WARM_UP = 2.0  # traffic before the first reload
RELOAD_EVERY = 6.0  # 5 reloads spread over 30 s of traffic
COOL_DOWN = 4.0  # traffic after the last reload (past the last generation's drain)
MAX_STEPS = 100_000  # per client, whatever the speed
HARD_LIMIT = 60.0  # a client loop never runs longer than this
IO_TIMEOUT = 5.0  # any single wait of a client
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REFUSED_STREAM = 7  # RFC 9113 8.7: the stream was not processed, safe to send again


class Origin(ThreadedServer):
    """GET PATH: 200 with "NAME PATH", keep-alive; a WebSocket upgrade: echoes every
    message. Records the paths served and the close code of each WebSocket."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.served: set[bytes] = set()
        self.ws_close_codes: list[int] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1]
            if any(line.lower().startswith(b"upgrade:") for line in lines[1:]):
                self._websocket(conn, head + b"\r\n\r\n" + data)
                return
            self.served.add(path)
            body = self.name + b" " + path
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    def _websocket(self, conn: socket.socket, data: bytes) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        code = 1006  # the connection ended without a Close
        try:
            while data:
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, wsproto.events.Request):
                        conn.sendall(ws.send(wsproto.events.AcceptConnection()))
                    elif isinstance(event, wsproto.events.Message):
                        conn.sendall(ws.send(event))  # the same message back
                    elif isinstance(event, wsproto.events.Ping):
                        conn.sendall(ws.send(event.response()))
                    elif isinstance(event, wsproto.events.CloseConnection):
                        code = event.code
                        conn.sendall(ws.send(event.response()))
                        return
                data = conn.recv(65536)
        except (LocalProtocolError, RemoteProtocolError):
            code = 1002
        finally:
            self.ws_close_codes.append(code)


class Loop(threading.Thread):
    """A client thread: ``step`` until stopped, MAX_STEPS or HARD_LIMIT; ``step`` raises
    for a failure, which is recorded and followed by a fresh connection."""

    def __init__(self, kind: str, number: int, port: int, stop: threading.Event) -> None:
        super().__init__(name=f"{kind}-{number}", daemon=True)
        self.kind = kind
        self.number = number
        self.port = port
        self.stop = stop
        self.ok = 0
        self.connections = 0
        self.failures: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + HARD_LIMIT
        for n in range(MAX_STEPS):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            try:
                self.step(n)
            except Exception as exc:  # every kind of error is a failure: keep its text
                self.failures.append(f"{time.time():.3f} {self.name} step {n}: {exc!r}")
                self.reset()
        self.reset()

    def step(self, n: int) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Drop the connection (a failure, or the end)."""


class H1Client(Loop):
    """GETs over one keep-alive connection at a time, parsed by hand (so that what the
    server did is seen exactly: Connection: close, EOF, reset)."""

    def __init__(self, number: int, port: int, stop: threading.Event) -> None:
        super().__init__("h1", number, port, stop)
        self.sock: socket.socket | None = None
        self.reader: BinaryIO = io.BytesIO()  # the connection's buffered reader
        self.answered = 0  # responses on the current connection
        self.closed_by_header = 0  # Connection: close received
        self.found_closed = 0  # an idle connection found closed before reuse
        self.unanswered: list[bytes] = []  # sent just as an idle connection closed

    def reset(self) -> None:
        if self.sock is not None:
            self.reader.close()  # (the socket's descriptor stays open while it is)
            self.sock.close()
            self.sock = None

    def _connection(self) -> socket.socket:
        if self.sock is not None and select.select([self.sock], [], [], 0)[0]:
            self.found_closed += 1  # EOF (or a reset) of an idle connection: nothing lost
            self.reset()
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
            self.reader = self.sock.makefile("rb")
            self.answered = 0
            self.connections += 1
        return self.sock

    def step(self, n: int) -> None:
        sock = self._connection()
        path = b"/h1/%d/%d" % (self.number, n)
        sock.sendall(b"GET %s HTTP/1.1\r\nhost: trilb.test\r\n\r\n" % path)
        try:
            status = self.reader.readline()
        except ConnectionResetError:
            # A reset with no FIN before it: trilb closed the connection with this request
            # in its receive buffer, unread (after a FIN, Linux reports EOF here first).
            raise ConnectionError(f"{path!r}: reset, the request dropped unanswered") from None
        if not status:
            if not self.answered:
                raise ConnectionError(f"{path!r}: no response on a new connection")
            self.unanswered.append(path)  # the keep-alive race: see the module docstring
            self.reset()
            return
        fields: dict[bytes, bytes] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        body = self.reader.read(int(fields.get(b"content-length", b"-1")))
        if not status.startswith(b"HTTP/1.1 200 ") or body[2:] != path:
            raise ValueError(f"{path!r}: {status!r} {body[:200]!r}")
        self.ok += 1
        self.answered += 1
        if fields.get(b"connection") == b"close":
            self.closed_by_header += 1
            self.reset()


class Refused(Exception):
    """The server did not process the stream (RFC 9113 6.8 and 8.7): send it again on a
    new connection."""


class H2Client(Loop):
    """GETs over HTTP/2 with prior knowledge, one stream at a time, frames read with
    hyperframe and headers with hpack. Not httpx: it uses the h2 library, whose state
    machine closes on a GOAWAY (python-hyper/h2 issue 1181), so the streams a graceful
    GOAWAY lets finish fail there, and httpx fails a REFUSED_STREAM reset too."""

    def __init__(self, number: int, port: int, stop: threading.Event) -> None:
        super().__init__("h2", number, port, stop)
        self.sock: socket.socket | None = None
        self.goaways = 0  # GOAWAY frames received (each NO_ERROR)
        self.refused = 0  # streams the server did not process, sent again

    def reset(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.buf = b""
        self.sid = 1
        self.goaway: int | None = None  # the last stream id of a GOAWAY received
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
        self.connections += 1

    def step(self, n: int) -> None:
        path = b"/h2/%d/%d" % (self.number, n)
        for _ in range(3):  # (a stream refused again and again is a failure)
            if self.sock is None:
                self._connect()
            try:
                status, body = self._get(path)
            except Refused:
                self.refused += 1
                self.reset()
                continue
            if status != b"200" or body[2:] != path:
                raise ValueError(f"{path!r}: {status!r} {body[:200]!r}")
            self.ok += 1
            if self.goaway is not None:  # no new stream on this connection
                self.reset()
            return
        raise ConnectionError(f"{path!r}: refused three times")

    def _get(self, path: bytes) -> tuple[bytes, bytes]:
        assert self.sock is not None
        sid, self.sid = self.sid, self.sid + 2
        block = self.encoder.encode([(b":method", b"GET"), (b":scheme", b"http"),
                                     (b":authority", b"trilb.test"), (b":path", path)])  # fmt: skip
        headers = HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"])
        try:
            self.sock.sendall(headers.serialize())
        except (BrokenPipeError, ConnectionResetError):
            pass  # a GOAWAY (or not) is still to be read
        status, body, block = b"", b"", b""
        while True:
            frame = self._frame()
            if frame is None:  # the connection ended
                if self.goaway is not None and sid > self.goaway:
                    raise Refused
                raise ConnectionError(f"{path!r}: stream {sid} cut off, goaway {self.goaway}")
            if isinstance(frame, GoAwayFrame):
                if frame.error_code != 0:
                    raise ConnectionError(f"{path!r}: GOAWAY error {frame.error_code}")
                self.goaways += 1
                self.goaway = frame.last_stream_id
                if sid > frame.last_stream_id:
                    raise Refused
            elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                self._send(SettingsFrame(0, flags=["ACK"]))
            elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                self._send(PingFrame(0, frame.opaque_data, flags=["ACK"]))
            elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
                block += frame.data  # every block is decoded: HPACK state is shared
                if "END_HEADERS" in frame.flags:
                    fields = dict(self.decoder.decode(block, raw=True))
                    block = b""
                    if frame.stream_id == sid:
                        status = fields.get(b":status", b"")
            elif isinstance(frame, DataFrame) and frame.flow_controlled_length:
                body += frame.data if frame.stream_id == sid else b""
                size = frame.flow_controlled_length
                self._send(WindowUpdateFrame(0, size), WindowUpdateFrame(frame.stream_id, size))
            elif isinstance(frame, RstStreamFrame) and frame.stream_id == sid:
                if frame.error_code == REFUSED_STREAM:
                    raise Refused
                raise ConnectionError(f"{path!r}: RST_STREAM {frame.error_code}")
            if frame.stream_id == sid and "END_STREAM" in frame.flags:
                return status, body

    def _send(self, *frames: Frame) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(b"".join(f.serialize() for f in frames))
        except (BrokenPipeError, ConnectionResetError):
            pass  # what the server sent before it closed is still to be read

    def _frame(self) -> Frame | None:
        """The next frame, or None at the end of the connection."""
        assert self.sock is not None
        while True:
            if len(self.buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) >= 9 + length:
                    frame.parse_body(memoryview(self.buf[9 : 9 + length]))
                    self.buf = self.buf[9 + length :]
                    return frame
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.buf += data


class WsClient(Loop):
    """Echoes a message at a time over a WebSocket; reconnects after a Close 1001."""

    def __init__(self, number: int, port: int, stop: threading.Event) -> None:
        super().__init__("ws", number, port, stop)
        self.ws: ClientConnection | None = None
        self.stack = contextlib.ExitStack()
        self.going_away: list[float] = []  # when each 1001 arrived (time.time())

    def reset(self) -> None:
        self.stack.close()  # (the connection's context: it closes the WebSocket)
        self.ws = None

    def step(self, n: int) -> None:
        if self.ws is None:
            self.ws = self.stack.enter_context(
                connect(f"ws://127.0.0.1:{self.port}/ws/{self.number}", open_timeout=IO_TIMEOUT,
                        close_timeout=IO_TIMEOUT, ping_interval=None)
            )  # fmt: skip
            self.connections += 1
        message = f"ws {self.number} {n}"
        try:
            self.ws.send(message)
            echo = self.ws.recv(timeout=IO_TIMEOUT)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code != 1001:
                raise
            self.going_away.append(time.time())
            self.reset()
            return
        if echo != message:
            raise ValueError(f"sent {message!r}, got {echo!r}")
        self.ok += 1


def drain_times(log: str) -> list[float]:
    """When the master began draining each old generation (its log's UTC timestamps)."""
    stamps = re.findall(r"^(\S+) master\[\d+\] INFO \S+: generation \d+: draining", log, re.M)
    parse = datetime.strptime
    return [parse(s, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp() for s in stamps]


def generation_pids(log: str, number: int, role: str = r"\w+(?: \d+)?") -> set[int]:
    """The processes of generation ``number`` (of ``role``: "worker 1", "worker \\d+")."""
    found = re.findall(rf"\b(?:{role}) pid (\d+) ready \(generation {number}\)", log)
    return {int(pid) for pid in found}


def config(port: int, origins: list[Origin]) -> str:
    return http_config(port, [o.address for o in origins], f'[global]\ngrace = "{GRACE:g}s"\n')


def test_reloads_under_http1_http2_and_websocket_load_fail_nothing(
    trilb_factory: Factory,
) -> None:
    origins = [Origin("A"), Origin("B")]
    port = free_port()
    trilb = trilb_factory(config(port, origins), workers=2)
    stop = threading.Event()
    h1 = [H1Client(i, port, stop) for i in range(H1_CLIENTS)]
    h2 = [H2Client(i, port, stop) for i in range(H2_CLIENTS)]
    ws = [WsClient(i, port, stop) for i in range(WS_CLIENTS)]
    clients: list[Loop] = [*h1, *h2, *ws]
    started = time.monotonic()
    try:
        for client in clients:
            client.start()
        for k in range(1, RELOADS + 1):
            time.sleep(max(0.0, started + WARM_UP + (k - 1) * RELOAD_EVERY - time.monotonic()))
            trilb.signal(signal.SIGHUP)
            trilb.wait_log(f"generation {k}: draining", 15)  # generation k+1 is ready
        time.sleep(max(0.0, started + WARM_UP + (RELOADS - 1) * RELOAD_EVERY + COOL_DOWN
                       - time.monotonic()))  # fmt: skip
    finally:
        stop.set()
        for client in clients:
            client.join(IO_TIMEOUT * 2)
        for origin in origins:
            origin.stop()
    ran = time.monotonic() - started
    assert not [c.name for c in clients if c.is_alive()], "clients still running"

    log = trilb.log()
    failures = [f for c in clients for f in c.failures]
    assert failures == [], "\n".join(failures[:50])
    # Every client got through the whole run.
    assert all(c.ok > 0 for c in clients), [(c.name, c.ok) for c in clients if not c.ok]
    # Each reload reached every client kind: new connections after each.
    assert all(c.connections > RELOADS for c in h1), [(c.name, c.connections) for c in h1]
    assert all(c.connections > RELOADS for c in h2), [(c.name, c.connections) for c in h2]
    # Every WebSocket open at a reload got its 1001, within the grace period that began
    # when its generation started draining (and no WebSocket ended otherwise). (trilb
    # sends it as the drain begins, docs/configuration.md "Closing"; a 1001 sent at the
    # grace deadline instead would pass too.)
    drains = drain_times(log)
    assert len(drains) == RELOADS
    assert all(len(c.going_away) >= RELOADS for c in ws), [len(c.going_away) for c in ws]
    delays = [min((t - d for d in drains if t >= d - 0.05), default=-1.0)
              for c in ws for t in c.going_away]  # fmt: skip
    assert all(0 <= d <= GRACE + 0.5 for d in delays), sorted(delays)[-5:]
    assert set(code for o in origins for code in o.ws_close_codes) <= {1000, 1001}
    # Requests lost to the keep-alive race were never processed: retrying them is safe.
    unanswered = [p for c in h1 for p in c.unanswered]
    assert not [p for p in unanswered if any(p in o.served for o in origins)]
    assert len(unanswered) <= H1_CLIENTS * RELOADS  # at most one per client and drain
    # The old generations are gone: only the last one's workers are left, none killed.
    deadline = time.monotonic() + GRACE + 2
    newest = generation_pids(log, RELOADS + 1)  # (its control process too, if it has one)
    while set(trilb.children()) != newest and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(trilb.children()) == newest, (trilb.children(), newest)
    assert len(generation_pids(log, RELOADS + 1, r"worker \d+")) == 2
    log = trilb.log()
    assert "past its grace period" not in log and "Traceback" not in log
    print(
        f"\nran {ran:.1f}s with {RELOADS} reloads"
        f"\nh1: {sum(c.ok for c in h1)} requests (min {min(c.ok for c in h1)}/client), "
        f"{sum(c.connections for c in h1)} connections, "
        f"{sum(c.closed_by_header for c in h1)} Connection: close, "
        f"{sum(c.found_closed for c in h1)} idle found closed, {len(unanswered)} unanswered"
        f"\nh2: {sum(c.ok for c in h2)} requests (min {min(c.ok for c in h2)}/client), "
        f"{sum(c.connections for c in h2)} connections, {sum(c.goaways for c in h2)} GOAWAY, "
        f"{sum(c.refused for c in h2)} streams refused and sent again"
        f"\nws: {sum(c.ok for c in ws)} echoes (min {min(c.ok for c in ws)}/client), "
        f"{sum(c.connections for c in ws)} connections, "
        f"{sum(len(c.going_away) for c in ws)} closes 1001, "
        f"delay after drain {min(delays):.3f}..{max(delays):.3f}s"
        f"\norigin ws closes: {sorted(set(c for o in origins for c in o.ws_close_codes))}, "
        f"grace period over: {log.count('grace period over')}"
    )
