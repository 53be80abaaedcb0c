"""A real `trilb serve` speaking HTTP/2 to clients (h2c with prior knowledge, and h2 over
TLS by ALPN) in front of HTTP/1.1 backends: curl, httpx, and a raw `h2` client for
what well-behaved clients never send."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest
from hpack import Encoder
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

from tests.integration.conftest import ThreadedServer, Trilb, free_port
from tests.integration.test_http_serve import BOUND_KIB, rss_kib
from tests.integration.test_tls_serve import Pki, client_context, origin, pattern, pki

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]
__all__ = ["origin", "pki"]  # fixtures used by name


def h2_config(port: int, origin: int, tls: str = "") -> str:
    return f"""
[global]
grace = "3s"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"
{tls}

[backends.app]
servers = ["127.0.0.1:{origin}"]
"""


@pytest.fixture
def h2c(trilb_factory: Factory, origin: int) -> int:
    port = free_port()
    trilb_factory(h2_config(port, origin), workers=2, ready=2)
    return port


@pytest.fixture
def h2tls(trilb_factory: Factory, origin: int, pki: Pki) -> int:
    port = free_port()
    cert, key = pki.files["default"]
    tls = f'tls = {{ certs = [{{ cert = "{cert}", key = "{key}" }}], alpn = ["h2", "http/1.1"] }}'
    trilb_factory(h2_config(port, origin, tls), workers=1, ready=1)
    return port


class RawClient:
    """An HTTP/2 client connection driven by hand (h2, with its own checks off)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )  # fmt: skip
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(self, sid: int, path: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        fields = [(b":method", b"GET"), (b":path", path), (b":scheme", b"http"),
                  (b":authority", b"x.test"), *extra]  # fmt: skip
        self.conn.send_headers(sid, fields, end_stream=True)
        self.flush()

    def post(self, sid: int, extra: tuple[bytes, bytes], body: bytes, end: bool) -> None:
        """A POST to /up with one more field, and its body (ending the stream or not)."""
        fields = [(b":method", b"POST"), (b":path", b"/up"), (b":scheme", b"http"),
                  (b":authority", b"x"), extra]  # fmt: skip
        self.conn.send_headers(sid, fields)
        self.conn.send_data(sid, body, end_stream=end)
        self.flush()

    def events(self, until: Callable[[h2.events.Event], bool], limit: float = 5) -> list[object]:
        """Events until ``until`` says stop, the connection ends, or ``limit`` seconds."""
        seen: list[object] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            for event in self.conn.receive_data(data):
                seen.append(event)
                if until(event):
                    return seen
            self.flush()
        return seen

    def close(self) -> None:
        self.sock.close()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=20)


def test_curl_h2c_prior_knowledge_and_h2_over_tls(h2c: int, h2tls: int, pki: Pki) -> None:
    out = curl("--http2-prior-knowledge", "-w", " %{http_version}", f"http://127.0.0.1:{h2c}/a")
    assert out.stdout == f"/a proto=http host=127.0.0.1:{h2c} 2".encode(), out.stderr
    out = curl("--http2", "--cacert", str(pki.ca), "-w", " %{http_version}",
               f"https://localhost:{h2tls}/b")  # fmt: skip
    assert out.stdout == f"/b proto=https host=localhost:{h2tls} 2".encode(), out.stderr
    # A client that offers only HTTP/1.1 on the same frontend gets it.
    out = curl("--http1.1", "--cacert", str(pki.ca), "-w", " %{http_version}",
               f"https://localhost:{h2tls}/c")  # fmt: skip
    assert out.stdout == f"/c proto=https host=localhost:{h2tls} 1.1".encode(), out.stderr


def test_httpx_streams_bodies_both_ways_over_one_connection(h2tls: int, pki: Pki) -> None:
    up = pattern(3 << 20)
    digest = hashlib.sha256(up).hexdigest()

    def parts() -> Iterator[bytes]:
        for i in range(0, len(up), 100_000):
            yield up[i : i + 100_000]

    with httpx.Client(http2=True, verify=client_context(pki),
                      base_url=f"https://localhost:{h2tls}") as client:  # fmt: skip
        for _ in range(3):
            sized = client.post("/up", content=up)
            assert sized.http_version == "HTTP/2" and sized.text == digest
            # No content-length: the backend gets it chunked.
            assert client.post("/up", content=parts()).text == "chunked " + digest
            big = client.get(f"/big/{6 << 20}")
            assert big.content == pattern(6 << 20)
            assert client.get("/small").headers["via"] == "1.1 trilb"


def test_many_concurrent_streams_on_one_connection(h2c: int) -> None:
    client = RawClient(h2c)
    try:
        ids = list(range(1, 2 * 60, 2))
        for sid in ids:
            client.request(sid, b"/s%d" % sid)
        bodies: dict[int, bytes] = {}
        ended: set[int] = set()

        def done(event: object) -> bool:
            if isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                client.conn.acknowledge_received_data(event.flow_controlled_length,
                                                      event.stream_id)  # fmt: skip
            if isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
            return len(ended) == len(ids)

        client.events(done, limit=15)
        assert ended == set(ids)
        for sid in ids:
            assert bodies[sid].startswith(b"/s%d proto=http host=x.test" % sid)
    finally:
        client.close()


@pytest.mark.parametrize(
    "fields",
    [
        [(b"x-evil", b"a\r\nx-injected: 1")],
        [(b"x-nul", b"a\x00b")],
        [(b"connection", b"keep-alive")],
        [(b"transfer-encoding", b"chunked")],
        [(b"X-Upper", b"1")],
        [(b":path", b"/twice")],
    ],
)
def test_requests_http11_cannot_carry_are_refused_never_forwarded(
    h2c: int, fields: list[tuple[bytes, bytes]]
) -> None:
    client = RawClient(h2c)
    try:
        client.request(1, b"/refused", tuple(fields))
        ends = (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)
        events = client.events(lambda e: isinstance(e, ends))
        statuses = [dict(e.headers)[b":status"] for e in events
                    if isinstance(e, h2.events.ResponseReceived)]  # fmt: skip
        refused = statuses == [b"400"] or any(
            isinstance(e, (h2.events.StreamReset, h2.events.ConnectionTerminated)) for e in events
        )
        assert refused, events
        assert not any(isinstance(e, h2.events.DataReceived) and b"/refused" in e.data
                       for e in events)  # fmt: skip
    finally:
        client.close()
    # The service goes on for others.
    out = curl("--http2-prior-knowledge", f"http://127.0.0.1:{h2c}/after")
    assert out.stdout.startswith(b"/after ")


def test_rapid_reset_is_cut_off_with_goaway_and_others_are_served(h2c: int) -> None:
    attacker = RawClient(h2c)
    try:
        for sid in range(1, 2 * 1000, 2):
            attacker.conn.send_headers(sid, [(b":method", b"GET"), (b":path", b"/slow"),
                                             (b":scheme", b"http"), (b":authority", b"x")],
                                       end_stream=True)  # fmt: skip
            attacker.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            if sid % 50 == 1:
                attacker.flush()
        attacker.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass  # cut off while still sending: as it should be
    assert read_goaway(attacker.sock) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    attacker.close()
    out = curl("--http2-prior-knowledge", f"http://127.0.0.1:{h2c}/ok")
    assert out.stdout.startswith(b"/ok ")


def test_a_backend_down_gets_502_on_the_stream(trilb_factory: Factory) -> None:
    port = free_port()
    trilb_factory(h2_config(port, free_port()), workers=1, ready=1)
    out = curl("--http2-prior-knowledge", "-w", " %{http_code}", f"http://127.0.0.1:{port}/")
    assert out.stdout.endswith(b" 502") and b"127.0.0.1" not in out.stdout


def goaway_after(port: int, frames: Callable[[RawClient], list[bytes]]) -> int | None:
    """Open a connection, send the raw frames ``frames`` makes; the error code of the
    GOAWAY that came back, or None when the connection ended without one."""
    client = RawClient(port)
    try:
        try:
            for data in frames(client):
                client.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut off while still sending
        return read_goaway(client.sock)
    finally:
        client.close()


def read_frames(sock: socket.socket, limit: float = 5) -> list[Frame]:
    """Every frame until the connection closes (or ``limit`` seconds)."""
    buf = b""
    frames = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            frames.append(frame)
            buf = buf[9 + length :]
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        buf += data
    return frames


def read_goaway(sock: socket.socket, limit: float = 5) -> int | None:
    """The error code of the GOAWAY among the frames until the connection closes (read
    with hyperframe: an h2 connection object refuses everything after a GOAWAY)."""
    goaway = [f for f in read_frames(sock, limit) if isinstance(f, GoAwayFrame)]
    return int(goaway[0].error_code) if goaway else None


def headers_frame(client: RawClient, sid: int, end_headers: bool = True) -> HeadersFrame:
    block = client.conn.encoder.encode(
        [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"x")]
    )
    frame = HeadersFrame(sid, block)
    frame.flags.add("END_STREAM")
    if end_headers:
        frame.flags.add("END_HEADERS")
    return frame


def test_continuation_flood_is_refused(h2c: int) -> None:
    def frames(client: RawClient) -> list[bytes]:
        out = [headers_frame(client, 1, end_headers=False).serialize()]
        out += [ContinuationFrame(1, b"\x40\x01a\x01b").serialize() for _ in range(200)]
        return out

    assert goaway_after(h2c, frames) == h2.errors.ErrorCodes.PROTOCOL_ERROR


def test_hpack_bomb_over_the_header_list_limit_is_refused(h2c: int) -> None:
    def frames(client: RawClient) -> list[bytes]:
        encoder = Encoder()
        fields = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"),
                  (b":authority", b"x"), (b"x-big", b"b" * 4000)]  # fmt: skip
        fields += [(b"x-big", b"b" * 4000)] * 200  # ~800 KB decoded, a few hundred bytes sent
        frame = HeadersFrame(1, encoder.encode(fields))
        frame.flags.add("END_STREAM")
        frame.flags.add("END_HEADERS")
        return [frame.serialize()]

    code = goaway_after(h2c, frames)
    assert code is not None and code != h2.errors.ErrorCodes.NO_ERROR


@pytest.mark.parametrize("kind", ["settings", "ping"])
def test_settings_and_ping_floods_get_goaway(h2c: int, kind: str) -> None:
    def frames(client: RawClient) -> list[bytes]:
        if kind == "settings":
            one = SettingsFrame(0, {h2.settings.SettingCodes.ENABLE_PUSH: 0}).serialize()
        else:
            one = PingFrame(0, b"12345678").serialize()
        return [one * 100 for _ in range(30)]  # 3000 frames, as fast as they go

    assert goaway_after(h2c, frames) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_a_window_pushed_past_the_maximum_is_a_flow_control_error(h2c: int) -> None:
    def frames(client: RawClient) -> list[bytes]:
        return [WindowUpdateFrame(0, 2**31 - 1).serialize()]

    assert goaway_after(h2c, frames) == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR


def test_a_stop_sends_goaway_and_the_stream_in_flight_finishes(
    trilb_factory: Factory, origin: int
) -> None:
    port = free_port()
    trilb = trilb_factory(h2_config(port, origin), workers=1, ready=1)
    slow = subprocess.Popen(
        ["curl", "-sS", "--http2-prior-knowledge", "-w", " %{http_version}",
         f"http://127.0.0.1:{port}/slow/1500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    raw = RawClient(port)  # a second client, to see the frames
    try:
        raw.request(1, b"/slow/1200")
        time.sleep(0.5)  # both requests are at the backend
        trilb.signal(signal.SIGTERM)
        out, err = slow.communicate(timeout=10)
        frames = read_frames(raw.sock)
    finally:
        raw.close()
        if slow.poll() is None:
            slow.kill()
    assert slow.returncode == 0, err
    assert out == b"slow 2"
    kinds = [type(f).__name__ for f in frames if f.stream_id in (0, 1)]
    goaway = next(f for f in frames if isinstance(f, GoAwayFrame))
    assert (goaway.last_stream_id, goaway.error_code) == (1, 0)
    assert kinds.index("GoAwayFrame") < kinds.index("HeadersFrame") < kinds.index("DataFrame")
    assert b"".join(f.data for f in frames if isinstance(f, DataFrame)) == b"slow"
    assert "draining 2 connection" in trilb.log()
    assert trilb.proc.wait(10) == 0


def test_a_client_that_reads_slowly_does_not_make_trilb_buffer_the_response(
    trilb_factory: Factory, origin: int
) -> None:
    # The client grants windows far larger than the response: only the socket's
    # backpressure can keep trilb from reading the whole body from the backend at once.
    port = free_port()
    trilb = trilb_factory(h2_config(port, origin), workers=1, ready=1)
    (worker,) = trilb.children()
    size = 64 << 20
    client = RawClient(port)
    try:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        client.conn.increment_flow_control_window(2**31 - 1 - 65535)
        client.request(1, b"/big/%d" % size)
        before = rss_kib(worker)
        peak, received, ended = before, 0, False
        deadline = time.monotonic() + 60
        while not ended and time.monotonic() < deadline:
            data = client.sock.recv(65536)
            if not data:
                break
            for event in client.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    received += len(event.data)
                    if received % (1 << 20) < len(event.data):  # about every MiB
                        time.sleep(0.02)  # a slow reader
                        peak = max(peak, rss_kib(worker))
                ended = ended or isinstance(event, h2.events.StreamEnded)
            client.flush()
    finally:
        client.close()
    assert ended and received == size
    assert peak - before < BOUND_KIB, (before, peak)


def test_a_body_shorter_than_its_content_length_is_refused(h2c: int) -> None:
    client = RawClient(h2c)
    try:
        client.post(1, (b"content-length", b"10"), b"12345", end=True)
        frames = read_frames(client.sock)
    finally:
        client.close()
    # h2 counts the DATA against content-length: a connection error, and no response.
    assert any(isinstance(f, GoAwayFrame) and f.error_code == 1 for f in frames), frames
    assert not any(isinstance(f, HeadersFrame) for f in frames)


def test_nghttp_and_h2load_from_nghttp2(h2c: int, h2tls: int) -> None:
    out = subprocess.run(["nghttp", "-v", f"http://127.0.0.1:{h2c}/n1", f"http://127.0.0.1:{h2c}/n2"],
                         capture_output=True, text=True, timeout=20)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "/n1 proto=http" in out.stdout and "/n2 proto=http" in out.stdout
    assert out.stdout.count("recv HEADERS frame") >= 2
    for url in (f"http://127.0.0.1:{h2c}/small", f"https://127.0.0.1:{h2tls}/small"):
        load = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "10", url],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert "400 succeeded, 0 failed, 0 errored" in load.stdout, load.stdout
    # nghttp2's decoder with a smaller table than trilb's encoder starts with: the size
    # update must come first (nghttp2 refuses the block otherwise), the fields survive.
    urls = [f"http://127.0.0.1:{h2c}/t{i}" for i in range(6)]
    for size in ("0", "80", "4096"):
        out = subprocess.run(["nghttp", "-v", "-c", size, *urls], capture_output=True, text=True,
                             timeout=20)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert all(f"/t{i} proto=http" in out.stdout for i in range(6)), out.stdout
        assert out.stdout.count(":status: 200") == 6


def test_a_response_still_flowing_keeps_an_idle_client_connection_open(
    trilb_factory: Factory, origin: int
) -> None:
    # keepalive_timeout is inactivity both ways: 2.4 s of a slow response outlast 1 s of
    # client silence, and the connection times out only once nothing moves.
    port = free_port()
    trilb_factory(h2_config(port, origin).replace('default_backend = "app"',
                                                   'default_backend = "app"\n'
                                                   'keepalive_timeout = "1s"'),
                  workers=1, ready=1)  # fmt: skip
    out = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/drip/8")
    assert out.returncode == 0 and out.stdout == b"d" * 8, out.stderr
    client = RawClient(port)
    try:
        start = time.monotonic()
        assert read_frames(client.sock, limit=10) is not None  # until trilb closes it
        assert 0.9 < time.monotonic() - start < 4
    finally:
        client.close()


class Recording(ThreadedServer):
    """An HTTP/1.1 backend that records request lines and answers 200 "ok"."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, data = data.split(b"\r\n\r\n", 1)
            self.lines.append(head.split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


def post(path: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), (b":path", path), (b":scheme", b"http"), (b":authority", b"x")]


@pytest.fixture
def recorded(trilb_factory: Factory) -> Iterator[tuple[int, Recording]]:
    backend = Recording()
    port = free_port()
    config = h2_config(port, backend.port).replace(
        'default_backend = "app"', 'default_backend = "app"\nmax_body_size = 1000'
    )
    trilb_factory(config, workers=1, ready=1)
    yield port, backend
    backend.stop()


def test_a_reset_sent_with_its_headers_never_reaches_the_backend(
    recorded: tuple[int, Recording],
) -> None:
    port, backend = recorded
    client = RawClient(port)
    try:
        for sid in (1, 3):
            client.conn.send_headers(sid, post(b"/gone%d" % sid))
            client.conn.reset_stream(sid)
        client.request(5, b"/kept")
        client.events(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 5)
    finally:
        client.close()
    assert backend.lines == [b"GET /kept HTTP/1.1"]


def test_streams_answered_before_their_body_ended_free_their_slot_and_window(
    recorded: tuple[int, Recording],
) -> None:
    # 150 uploads over max_body_size, each answered 413 while the client still sends:
    # each is reset (NO_ERROR) so it does not count against the 100 concurrent streams,
    # and the DATA it left unread goes back to the connection's window.
    port, _ = recorded
    client = RawClient(port)
    try:
        client.events(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
        statuses = []
        for sid in range(1, 301, 2):
            client.conn.send_headers(sid, post(b"/big"))
            client.conn.send_data(sid, b"x" * 4000)
            client.flush()

            def done(e: object, sid: int = sid) -> bool:
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    statuses.append(dict(e.headers)[b":status"])
                return isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and (
                    e.stream_id == sid
                )

            client.events(done)
        assert statuses == [b"413"] * 150
        client.conn.send_headers(301, [*post(b"/fine"), (b"content-length", b"900")])
        client.conn.send_data(301, b"y" * 900, end_stream=True)
        client.flush()
        start = time.monotonic()
        events = client.events(lambda e: isinstance(e, h2.events.StreamEnded))
        ok = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert [dict(e.headers)[b":status"] for e in ok] == [b"200"]
        assert time.monotonic() - start < 2
    finally:
        client.close()


class TrailerEcho(ThreadedServer):
    """Reads one chunked request whole and answers its trailer section as the body."""

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n0\r\n" not in data or not data.endswith(b"\r\n\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        trailers = data[data.index(b"\r\n0\r\n") + 5 :]
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(trailers),
                                                                           trailers))  # fmt: skip


def post_with_trailers(port: int, trailers: list[tuple[bytes, bytes]]) -> list[object]:
    client = RawClient(port)
    try:
        head = [(b":method", b"POST"), (b":path", b"/t"), (b":scheme", b"http"),
                (b":authority", b"x.test")]  # fmt: skip
        client.conn.send_headers(1, head)
        client.conn.send_data(1, b"hello")
        client.conn.send_headers(1, trailers, end_stream=True)
        client.flush()
        return client.events(lambda e: isinstance(e, (h2.events.StreamEnded,
                                                      h2.events.StreamReset)))  # fmt: skip
    finally:
        client.close()


def test_request_trailers_reach_an_http11_backend_as_chunked_trailers(
    trilb_factory: Factory,
) -> None:
    backend = TrailerEcho()
    port = free_port()
    trilb_factory(h2_config(port, backend.port), workers=1)
    events = post_with_trailers(port, [(b"x-checksum", b"abc"), (b"x-count", b"5")])
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert body == b"x-checksum: abc\r\nx-count: 5\r\n\r\n"
    bad = post_with_trailers(port, [(b"content-length", b"5")])
    assert [e.error_code for e in bad if isinstance(e, h2.events.StreamReset)] == [
        h2.errors.ErrorCodes.PROTOCOL_ERROR
    ]
    backend.stop()


def test_max_concurrent_streams_is_what_a_client_is_told_and_held_to(
    trilb_factory: Factory, origin: int
) -> None:
    port = free_port()
    config = h2_config(port, origin).replace(
        'default_backend = "app"', 'default_backend = "app"\nmax_concurrent_streams = 2'
    )
    trilb_factory(config, workers=1, ready=1)
    client = RawClient(port)
    try:
        client.events(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        assert client.conn.remote_settings.max_concurrent_streams == 2
        for sid in (1, 3):  # two bodies not ended: both streams stay open
            client.post(sid, (b"content-length", b"10"), b"12345", end=False)
        # A third, framed by hand (h2 itself keeps to the limit): refused, the others go on.
        block = Encoder().encode([(b":method", b"GET"), (b":path", b"/third"),
                                  (b":scheme", b"http"), (b":authority", b"x")])  # fmt: skip
        third = HeadersFrame(5, block)
        third.flags.add("END_STREAM")
        third.flags.add("END_HEADERS")
        client.sock.sendall(third.serialize())
        frames = read_frames(client.sock, limit=1.5)  # (h2's client drops a reset of a
    finally:  # stream it did not open: read as frames)
        client.close()
    resets = [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)]
    assert resets == [(5, h2.errors.ErrorCodes.REFUSED_STREAM)]


def test_a_request_refused_before_its_body_tells_the_client_to_stop_sending(h2c: int) -> None:
    client = RawClient(h2c)
    try:
        client.post(1, (b"connection", b"close"), b"x" * 1000, end=False)
        events = client.events(lambda e: isinstance(e, h2.events.StreamReset))
    finally:
        client.close()
    # The 400, then RST_STREAM(NO_ERROR) (RFC 9113 8.1): the body is not wanted.
    assert [dict(e.headers)[b":status"] for e in events
            if isinstance(e, h2.events.ResponseReceived)] == [b"400"]  # fmt: skip
    assert [e.error_code for e in events if isinstance(e, h2.events.StreamReset)] == [
        h2.errors.ErrorCodes.NO_ERROR
    ]


def test_random_frames_from_many_clients_never_break_a_worker(
    trilb_factory: Factory, origin: int
) -> None:
    """Each connection sends the preface, then a few frames, valid (requests, bodies,
    resets, window updates) or not (any type, flags, stream and payload): trilb answers,
    refuses or drops each connection, and its workers neither fail nor log a traceback."""
    import random
    import struct
    import threading

    port = free_port()
    trilb = trilb_factory(h2_config(port, origin), workers=1, ready=1)
    started = trilb.log().count(" ready (generation")

    def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
        return (
            struct.pack(">HBBBL", len(payload) >> 8, len(payload) & 0xFF, kind, flags, sid)
            + payload
        )

    def client(seed: int) -> None:
        rng = random.Random(seed)
        encoder = Encoder()
        out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", frame(4, 0, 0, b"")]
        for _ in range(rng.randrange(1, 8)):
            sid = rng.choice((1, 3, 5, 0, 2, 2**31 - 1))
            pick = rng.random()
            if pick < 0.3:  # a request (its block is the connection's: HPACK state)
                fields = [(b":method", rng.choice((b"GET", b"POST"))), (b":path", b"/f"),
                          (b":scheme", b"http"), (b":authority", b"x")]  # fmt: skip
                flags = rng.choice((4, 5, 0x24, 0x25))
                priority = struct.pack(">LB", rng.choice((0, sid)), 16) if flags & 0x20 else b""
                out.append(frame(1, flags, sid, priority + encoder.encode(fields)))
            elif pick < 0.45:
                out.append(
                    frame(0, rng.choice((0, 1, 8, 9)), sid, rng.randbytes(rng.randrange(40)))
                )
            elif pick < 0.55:
                out.append(frame(8, 0, sid, struct.pack(">L", rng.choice((0, 1, 2**31 - 1)))))
            elif pick < 0.62:
                out.append(frame(3, 0, sid, struct.pack(">L", rng.randrange(14))))
            else:
                size = rng.choice((0, 4, 5, 6, 8, rng.randrange(30)))
                out.append(frame(rng.randrange(12), rng.randrange(256), sid, rng.randbytes(size)))
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            try:
                conn.sendall(b"".join(out))
                deadline = time.monotonic() + 0.5
                while time.monotonic() < deadline and conn.recv(65536):
                    pass
            except OSError:
                pass  # (reset or timed out: dropped, as it may be)

    for batch in range(6):  # 144 connections, 24 at a time
        threads = [threading.Thread(target=client, args=(batch * 24 + i,)) for i in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    out = curl("--http2-prior-knowledge", f"http://127.0.0.1:{port}/after")
    assert out.stdout.startswith(b"/after ")
    log = trilb.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert log.count(" ready (generation") == started  # no worker died and came back
