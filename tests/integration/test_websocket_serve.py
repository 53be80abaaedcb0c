"""A real `trilb serve` proxying WebSocket connections to a real WebSocket server (the
`websockets` library), driven by `websockets` clients over ws:// and wss:// and by raw
sockets where the bytes on the wire matter."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import wsproto.connection
import wsproto.events
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.sync.client import connect
from websockets.sync.server import Server, ServerConnection, serve

from tests.integration.conftest import Trilb, free_port
from tests.integration.test_http_serve import rss_kib
from tests.integration.test_tls_serve import Pki, pki

pytestmark = pytest.mark.slow

Factory = Callable[..., Trilb]
__all__ = ["pki"]  # a fixture used by name
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def chat(conn: ServerConnection, offered: list[str]) -> str | None:
    return "chat" if "chat" in offered else None


class WsOrigin:
    """A WebSocket echo server. Paths: /close/CODE closes with CODE at once; /greet
    sends "hello" first; /refuse answers 403 to the handshake; anything else echoes.
    Records each handshake's headers and each connection's close code."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.close_codes: list[int | None] = []
        self.received: list[int] = []  # sizes of the messages received
        self.server: Server = serve(
            self._handle, "127.0.0.1", 0, max_size=None, select_subprotocol=chat,
            process_request=self._process, ping_interval=None,
        )  # fmt: skip
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _process(self, conn: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if request.path == "/refuse":
            return conn.respond(403, "not here\n")
        return None

    def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path.startswith("/close/"):
                ws.close(int(path[7:]), "bye")
                return
            if path == "/greet":
                ws.send("hello")
            if path.startswith("/flood/"):  # N messages of 1 MiB, as fast as they go
                block = b"f" * (1 << 20)
                for _ in range(int(path[7:])):
                    ws.send(block)
            for message in ws:
                self.received.append(len(message))
                ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(ws.close_code)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def ws_origin() -> Iterator[WsOrigin]:
    origin = WsOrigin()
    yield origin
    origin.stop()


def ws_config(port: int, origin: int, websocket: str = "", tls: str = "") -> str:
    return f"""
[global]
grace = "3s"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"
{f"websocket = {{ {websocket} }}" if websocket else ""}
{f"tls = {{ {tls} }}" if tls else ""}

[backends.app]
servers = ["127.0.0.1:{origin}"]
"""


@pytest.fixture
def proxied(trilb_factory: Factory, ws_origin: WsOrigin) -> int:
    port = free_port()
    trilb_factory(ws_config(port, ws_origin.port), workers=2)
    return port


def wait_for(check: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_messages_of_every_size_arrive_intact_both_ways(proxied: int, ws_origin: WsOrigin) -> None:
    with connect(f"ws://127.0.0.1:{proxied}/echo", max_size=None) as ws:
        ws.send("a")
        assert ws.recv() == "a"
        for size in (1, 64 << 10, 16 << 20):
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv(timeout=20) == data
        text = "é" * (64 << 10)
        ws.send(text)
        assert ws.recv() == text
    assert ws_origin.received[:4] == [1, 1, 64 << 10, 16 << 20]


def test_close_codes_arrive_as_sent_both_ways(proxied: int, ws_origin: WsOrigin) -> None:
    with connect(f"ws://127.0.0.1:{proxied}/echo") as ws:
        ws.send("x")
        ws.recv()
        ws.close(4001, "client done")
    wait_for(lambda: ws_origin.close_codes == [4001])
    with (
        connect(f"ws://127.0.0.1:{proxied}/close/4002") as ws,
        pytest.raises(ConnectionClosed) as caught,
    ):
        ws.recv(timeout=5)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 4002
    assert caught.value.rcvd.reason == "bye"


def test_the_handshake_is_forwarded_with_subprotocol_and_forwarding_fields(
    proxied: int, ws_origin: WsOrigin
) -> None:
    with connect(f"ws://127.0.0.1:{proxied}/greet", subprotocols=["chat", "other"]) as ws:
        assert ws.subprotocol == "chat"
        assert ws.recv() == "hello"  # sent by the backend right after its 101
        assert ws.response is not None and "trilb" in ws.response.headers["via"]
    request = ws_origin.requests[-1]
    assert request.headers["x-forwarded-for"] == "127.0.0.1"
    assert request.headers["upgrade"].lower() == "websocket"
    assert "upgrade" in request.headers["connection"].lower()


def test_a_refused_upgrade_passes_the_response_through(proxied: int) -> None:
    with pytest.raises(InvalidStatus) as caught:
        connect(f"ws://127.0.0.1:{proxied}/refuse")
    assert caught.value.response.status_code == 403
    assert caught.value.response.body == b"not here\n"


def handshake_bytes(path: str = "/echo", method: str = "GET", **fields: str) -> bytes:
    headers = {
        "host": "example.test",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": base64.b64encode(os.urandom(16)).decode(),
        "sec-websocket-version": "13",
    }
    for name, value in fields.items():
        name = name.replace("_", "-")
        if value:
            headers[name] = value
        else:
            headers.pop(name, None)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode()


def exchange(port: int, data: bytes, limit: float = 5) -> bytes:
    """Send ``data``, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"sec_websocket_key": ""}, b"400"),
        ({"sec_websocket_key": "c2hvcnQ="}, b"400"),
        ({"sec_websocket_version": "8"}, b"426"),
        ({"method": "POST", "content_length": "0"}, b"400"),
    ],
)
def test_a_malformed_handshake_is_refused_never_forwarded(
    proxied: int, ws_origin: WsOrigin, fields: dict[str, str], status: bytes
) -> None:
    method = fields.pop("method", "GET")
    out = exchange(proxied, handshake_bytes(method=method, **fields))
    assert out.startswith(b"HTTP/1.1 " + status), out
    if status == b"426":
        assert b"\r\nsec-websocket-version: 13\r\n" in out
    assert ws_origin.requests == []


class RawBackend:
    """One-shot backend: reads a head, answers ``reply(head)``, records the head."""

    def __init__(self, reply: Callable[[bytes], bytes]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: list[bytes] = []
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                    head += chunk
                self.heads.append(head)
                conn.sendall(self.reply(head))
                time.sleep(0.2)


def field(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return b""


def test_a_bad_101_from_the_backend_is_a_502(trilb_factory: Factory) -> None:
    def wrong_accept(head: bytes) -> bytes:
        return (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                b"connection: upgrade\r\nsec-websocket-accept: bm9wZQ==\r\n\r\n")  # fmt: skip

    backend = RawBackend(wrong_accept)
    port = free_port()
    trilb_factory(ws_config(port, backend.port), workers=1)
    out = exchange(port, handshake_bytes())
    assert out.startswith(b"HTTP/1.1 502 "), out
    backend.listener.close()


def test_an_upgrade_to_anything_else_is_not_made(trilb_factory: Factory) -> None:
    def plain(head: bytes) -> bytes:
        seen = field(head, b"upgrade") or b"none"
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(seen), seen)

    backend = RawBackend(plain)
    port = free_port()
    trilb_factory(ws_config(port, backend.port), workers=1)
    request = (b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\nconnection: upgrade, "
               b"http2-settings\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
               b"connection: close\r\n\r\n")  # fmt: skip
    out = exchange(port, request)
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert out.endswith(b"\r\n\r\nnone")
    assert field(backend.heads[0], b"http2-settings") == b""
    backend.listener.close()


def test_websocket_over_tls(trilb_factory: Factory, ws_origin: WsOrigin, pki: Pki) -> None:
    port = free_port()
    cert, key = pki.files["default"]
    tls = f'certs = [{{ cert = "{cert}", key = "{key}" }}]'
    trilb_factory(ws_config(port, ws_origin.port, tls=tls), workers=2)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    with connect(f"wss://localhost:{port}/echo", ssl=ctx, max_size=None) as ws:
        for size in (1, 64 << 10, 16 << 20):
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv(timeout=20) == data
        ws.close(4003)
    wait_for(lambda: ws_origin.close_codes == [4003])
    assert ws_origin.requests[0].headers["x-forwarded-proto"] == "https"


# Each relay: frames as bytes from the reactor (ws://), from two tasks (wss://), and
# messages parsed (max_message_size).
RELAYS = {
    "reactor": ("", False),
    "tasks": ("", True),
    "messages": ('max_message_size = "1MiB"', False),
}


def relay_proxy(
    factory: Factory, origin: WsOrigin, pki: Pki, relay: str, extra: str = ""
) -> tuple[Trilb, str, ssl.SSLContext | None]:
    """A one-worker trilb whose WebSockets take ``relay``; (trilb, base url, client TLS)."""
    settings, tls = RELAYS[relay]
    settings = ", ".join(x for x in (settings, extra) if x)
    port = free_port()
    cert, key = pki.files["default"]
    certs = f'certs = [{{ cert = "{cert}", key = "{key}" }}]' if tls else ""
    trilb = factory(ws_config(port, origin.port, settings, tls=certs), workers=1)
    if tls:
        return trilb, f"wss://localhost:{port}", ssl.create_default_context(cafile=str(pki.ca))
    return trilb, f"ws://127.0.0.1:{port}", None


@pytest.mark.parametrize("relay", list(RELAYS))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_shutdown_and_reload_close_websockets_with_1001_both_ways(
    trilb_factory: Factory, ws_origin: WsOrigin, pki: Pki, relay: str, sig: int
) -> None:
    trilb, url, ctx = relay_proxy(trilb_factory, ws_origin, pki, relay)
    with connect(f"{url}/echo", ssl=ctx) as ws:
        ws.send("before")
        assert ws.recv() == "before"
        trilb.signal(sig)
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=5)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001
    wait_for(lambda: ws_origin.close_codes == [1001])
    if sig == signal.SIGTERM:
        trilb.proc.wait(10)
        return
    trilb.wait_ready(2)  # the new generation serves new WebSockets
    with connect(f"{url}/echo", ssl=ctx) as ws:
        ws.send("after")
        assert ws.recv() == "after"


@pytest.mark.parametrize("relay", list(RELAYS))
def test_idle_timeout_closes_with_1001(
    trilb_factory: Factory, ws_origin: WsOrigin, pki: Pki, relay: str
) -> None:
    _, url, ctx = relay_proxy(trilb_factory, ws_origin, pki, relay, 'idle_timeout = "500ms"')
    start = time.monotonic()
    with (
        connect(f"{url}/echo", ssl=ctx, ping_interval=None) as ws,
        pytest.raises(ConnectionClosed) as caught,
    ):
        ws.recv(timeout=5)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001
    assert 0.4 < time.monotonic() - start < 3
    wait_for(lambda: ws_origin.close_codes == [1001])


@pytest.mark.parametrize("relay", list(RELAYS))
def test_pings_keep_an_answering_client_alive(
    trilb_factory: Factory, ws_origin: WsOrigin, pki: Pki, relay: str
) -> None:
    settings = 'idle_timeout = "1s", ping_interval = "200ms"'
    _, url, ctx = relay_proxy(trilb_factory, ws_origin, pki, relay, settings)
    with connect(f"{url}/echo", ssl=ctx, ping_interval=None) as ws:
        time.sleep(2.5)  # silent, but the library answers trilb's pings: not idle
        ws.send("still here")
        assert ws.recv(timeout=2) == "still here"


def test_a_ping_from_trilb_is_an_unmasked_ping_frame(
    trilb_factory: Factory, ws_origin: WsOrigin
) -> None:
    port = free_port()
    settings = 'idle_timeout = "1s", ping_interval = "200ms"'
    trilb_factory(ws_config(port, ws_origin.port, settings), workers=1)
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(handshake_bytes(sec_websocket_key=key.decode()))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        assert field(head, b"sec-websocket-accept") == accept
        rest = head.partition(b"\r\n\r\n")[2]
        while len(rest) < 7:
            rest += sock.recv(4096)
        assert rest[:7] == b"\x89\x05trilb"  # an unmasked Ping from trilb


class H2WebSocket:
    """A WebSocket over an HTTP/2 stream (RFC 8441): h2 for the connection, wsproto for
    the frames inside the stream's DATA."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(1 << 30)
        self.sock.sendall(self.h2.data_to_send())
        self.settings: dict[int, int] = {}
        self.events: list[object] = []
        while not self.settings:
            self._pump()
        self.sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(self.sid, [
            (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
            (b":path", path.encode()), (b":authority", b"example.test"),
            (b"sec-websocket-version", b"13")])  # fmt: skip
        self.sock.sendall(self.h2.data_to_send())
        self.ws = wsproto.connection.Connection(wsproto.connection.ConnectionType.CLIENT)
        self.status = b""
        self.closed_with: int | None = None
        self.ended = False
        while not self.status:
            self._pump()

    def _pump(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("trilb closed the connection")
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings = {int(k): v.new_value for k, v in event.changed_settings.items()}
            elif isinstance(event, h2.events.ResponseReceived):
                self.status = dict(event.headers)[b":status"]
                self.headers = event.headers
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.ws.receive_data(event.data)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended = True
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def send(self, event: wsproto.events.Event) -> None:
        data = self.ws.send(event)
        while data:
            window = min(self.h2.local_flow_control_window(self.sid), 16384)
            if window == 0:
                self._pump()
                continue
            self.h2.send_data(self.sid, data[:window])
            data = data[window:]
            self.sock.sendall(self.h2.data_to_send())

    def recv(self) -> bytes | str:
        parts: list[bytes | str] = []
        while True:
            for event in self.ws.events():
                if isinstance(event, wsproto.events.Message):
                    parts.append(event.data)
                    if event.message_finished:
                        return b"".join(parts) if isinstance(parts[0], bytes) else "".join(parts)  # type: ignore[arg-type]
                elif isinstance(event, wsproto.events.CloseConnection):
                    self.closed_with = event.code
                    raise ConnectionError(f"closed {event.code}")
            self._pump()

    def close(self) -> None:
        self.sock.close()


def test_websocket_over_http2_extended_connect(proxied: int, ws_origin: WsOrigin) -> None:
    client = H2WebSocket(proxied, "/echo")
    try:
        assert client.settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1
        assert client.status == b"200"
        for size in (1, 64 << 10, 16 << 20):
            data = os.urandom(size)
            client.send(wsproto.events.BytesMessage(data))
            assert client.recv() == data
        client.send(wsproto.events.TextMessage("héllo"))
        assert client.recv() == "héllo"
        client.send(wsproto.events.CloseConnection(4005, "h2 done"))
        with pytest.raises(ConnectionError):
            client.recv()
        assert client.closed_with == 4005  # the backend's answer to our close
    finally:
        client.close()
    wait_for(lambda: ws_origin.close_codes == [4005])
    request = ws_origin.requests[0]
    assert request.headers["upgrade"].lower() == "websocket"
    assert len(base64.b64decode(request.headers["sec-websocket-key"])) == 16


def test_a_refused_extended_connect_gets_the_backends_status(proxied: int) -> None:
    client = H2WebSocket(proxied, "/refuse")
    try:
        assert client.status == b"403"
    finally:
        client.close()


@pytest.fixture
def limited(trilb_factory: Factory, ws_origin: WsOrigin) -> int:
    """A frontend whose WebSockets are relayed message by message, 1 MiB at most."""
    port = free_port()
    trilb_factory(ws_config(port, ws_origin.port, 'max_message_size = "1MiB"'), workers=2)
    return port


def test_message_path_relays_whole_messages_and_close_codes(
    limited: int, ws_origin: WsOrigin
) -> None:
    with connect(f"ws://127.0.0.1:{limited}/echo", max_size=None) as ws:
        for size in (1, 64 << 10, 1 << 20):
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv(timeout=10) == data
        ws.send(["frag", "mented ", "é"])  # one message in three frames: one on the other side
        assert ws.recv() == "fragmented é"
        ws.close(4001, "client done")
    wait_for(lambda: ws_origin.close_codes == [4001])
    assert ws_origin.received == [1, 64 << 10, 1 << 20, len("fragmented é")]
    # Extensions are not negotiated on this path (the client offered permessage-deflate).
    assert "sec-websocket-extensions" not in ws_origin.requests[0].headers
    with (
        connect(f"ws://127.0.0.1:{limited}/close/4002") as ws,
        pytest.raises(ConnectionClosed) as caught,
    ):
        ws.recv(timeout=5)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 4002


def test_an_oversized_message_closes_with_1009_and_never_reaches_the_backend(
    limited: int, ws_origin: WsOrigin
) -> None:
    with connect(f"ws://127.0.0.1:{limited}/echo", max_size=None) as ws:
        ws.send(b"small")
        assert ws.recv() == b"small"
        ws.send(os.urandom((1 << 20) + 1))
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=5)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009
    wait_for(lambda: ws_origin.close_codes == [1001])
    assert ws_origin.received == [5]


def raw_upgrade(port: int) -> socket.socket:
    """A raw socket past its WebSocket handshake (101 read)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(handshake_bytes())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def read_close(sock: socket.socket) -> int:
    """Read frames until a Close; its code."""
    conn = wsproto.connection.Connection(wsproto.connection.ConnectionType.CLIENT)
    while chunk := sock.recv(65536):
        conn.receive_data(chunk)
        for event in conn.events():
            if isinstance(event, wsproto.events.CloseConnection):
                return event.code
    raise AssertionError("closed without a Close frame")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x02ab", 1002),  # unmasked: a client must mask
        (b"\x81\x82\x00\x00\x00\x00\xc3\x28", 1007),  # masked, text that is not UTF-8
    ],
)
def test_a_broken_client_frame_gets_its_close_code_and_is_not_relayed(
    limited: int, ws_origin: WsOrigin, frame: bytes, code: int
) -> None:
    with raw_upgrade(limited) as sock:
        sock.sendall(frame)
        assert read_close(sock) == code
    wait_for(lambda: ws_origin.close_codes == [1001])
    assert ws_origin.received == []


def test_message_path_over_http2(limited: int, ws_origin: WsOrigin) -> None:
    client = H2WebSocket(limited, "/echo")
    try:
        client.send(wsproto.events.TextMessage("over h2"))
        assert client.recv() == "over h2"
        client.send(wsproto.events.BytesMessage(b"x" * ((1 << 20) + 1)))
        with pytest.raises(ConnectionError):
            client.recv()
        assert client.closed_with == 1009
    finally:
        client.close()
    wait_for(lambda: ws_origin.close_codes == [1001])


def test_a_slow_reader_does_not_make_trilb_buffer_what_the_backend_sends(
    trilb_factory: Factory, ws_origin: WsOrigin
) -> None:
    port = free_port()
    trilb = trilb_factory(ws_config(port, ws_origin.port), workers=1)
    (worker,) = trilb.children()
    before = rss_kib(worker)
    peak = before
    total = 64 << 20
    received = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(handshake_bytes(path="/flood/64"))
        while received < total:  # (frame headers count too: a little over at the end)
            data = sock.recv(65536)
            assert data, "closed early"
            received += len(data)
            if received % (1 << 20) < len(data):  # about every MiB
                time.sleep(0.02)  # a slow reader
                peak = max(peak, rss_kib(worker))
    assert peak - before < 24 << 10, (before, peak)


def test_a_websocket_to_an_http2_backend_is_refused_with_501(trilb_factory: Factory) -> None:
    port = free_port()
    config = ws_config(port, free_port()) + 'protocol = "h2"\n'
    trilb_factory(config, workers=1)
    out = exchange(port, handshake_bytes())
    assert out.startswith(b"HTTP/1.1 501 "), out


def test_a_client_stalled_mid_frame_is_closed_and_the_worker_serves_on(
    trilb_factory: Factory, ws_origin: WsOrigin, pki: Pki
) -> None:
    """Over TLS (the task relay): a frame begun and never finished, then silence. The
    idle deadline cannot put a Close between frames there; the relay gives it
    CLOSE_TIMEOUT and ends, and meanwhile the worker serves others."""
    _, url, ctx = relay_proxy(trilb_factory, ws_origin, pki, "tasks", 'idle_timeout = "500ms"')
    assert ctx is not None
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        tls = ctx.wrap_socket(plain, server_hostname="localhost")
        tls.sendall(handshake_bytes())
        head = b""
        while b"\r\n\r\n" not in head:
            head += tls.recv(4096)
        start = time.monotonic()
        tls.sendall(b"\x82\xfe\x01\x00")  # a 256-byte binary frame's header, masked: no more
        time.sleep(1.0)  # past the idle deadline: the worker must not be stuck meanwhile
        with connect(f"{url}/echo", ssl=ctx, open_timeout=3) as other:
            other.send("still served")
            assert other.recv(timeout=3) == "still served"
        tls.settimeout(10)
        while tls.recv(4096):  # (trilb's Close towards us may come first)
            pass
        assert time.monotonic() - start < 6
