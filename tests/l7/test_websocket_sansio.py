"""The WebSocket handshake checks and the raw relay's frame walker, without sockets."""

from __future__ import annotations

import base64

import pytest
import wsproto.connection
import wsproto.events
from hypothesis import given
from hypothesis import strategies as st

from trilb.errors import ProtocolError
from trilb.l7.wsframes import FrameWalker, close_frame, frame
from trilb.l7.wshandshake import (
    accept_for,
    check_h2_request,
    check_request,
    check_response,
    h2_response_fields,
    switching_wire,
)
from trilb.messages import Framing, Headers, RequestHead, ResponseHead

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3's example


def handshake(**changes: object) -> RequestHead:
    fields = {b"host": b"a.test", b"sec-websocket-key": KEY, b"sec-websocket-version": b"13"}
    head = RequestHead(b"GET", b"/chat", upgrade=b"websocket")
    for name, value in changes.items():
        if name in ("method", "framing"):
            setattr(head, name, value)
        elif value is None:
            fields.pop(name.replace("_", "-").encode())
        else:
            fields[name.replace("_", "-").encode()] = value  # type: ignore[assignment]
    head.headers = Headers(list(fields.items()))
    return head


def test_the_rfc_example_key_gets_the_rfc_example_accept() -> None:
    assert accept_for(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert check_request(handshake()) == KEY


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"method": b"POST"}, 400),
        ({"framing": Framing.CHUNKED}, 400),
        ({"sec_websocket_key": None}, 400),
        ({"sec_websocket_key": b"not base64!"}, 400),
        ({"sec_websocket_key": base64.b64encode(b"15 bytes only..")}, 400),
        ({"sec_websocket_version": None}, 426),
        ({"sec_websocket_version": b"8"}, 426),
    ],
)
def test_bad_handshakes_are_refused(changes: dict[str, object], status: int) -> None:
    with pytest.raises(ProtocolError) as err:
        check_request(handshake(**changes))
    assert err.value.status == status


def switching(**fields: bytes) -> ResponseHead:
    base = {b"upgrade": b"websocket", b"connection": b"Upgrade",
            b"sec-websocket-accept": accept_for(KEY)}  # fmt: skip
    base.update({k.replace("_", "-").encode(): v for k, v in fields.items()})
    items = [(k, v) for k, v in base.items() if v]
    return ResponseHead(101, b"Switching Protocols", headers=Headers(items))


def test_a_backends_101_must_complete_the_handshake() -> None:
    check_response(switching(), KEY, extensions=False)
    check_response(switching(sec_websocket_extensions=b"permessage-deflate"), KEY, True)
    for bad in ({"upgrade": b"h2c"}, {"connection": b""}, {"sec_websocket_accept": b"x"}):
        with pytest.raises(ProtocolError) as err:
            check_response(switching(**bad), KEY, extensions=False)
        assert err.value.status == 502
    with pytest.raises(ProtocolError):  # an extension nobody offered
        check_response(switching(sec_websocket_extensions=b"permessage-deflate"), KEY, False)


def test_the_101_and_the_http2_200_carry_the_end_to_end_fields() -> None:
    rhead = switching(sec_websocket_protocol=b"chat")
    wire = switching_wire(rhead)
    assert wire.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nsec-websocket-protocol: chat\r\n" in wire
    assert b"\r\nconnection: upgrade\r\nupgrade: websocket\r\n" in wire
    fields = h2_response_fields(rhead)
    assert fields[0] == (b":status", b"200")
    names = [n for n, _ in fields]
    assert b"sec-websocket-accept" not in names and b"upgrade" not in names
    assert (b"sec-websocket-protocol", b"chat") in fields


def test_an_http2_request_gets_a_fresh_key() -> None:
    head = handshake(sec_websocket_key=None)
    key = check_h2_request(head)
    assert head.headers.get(b"sec-websocket-key") == key
    assert len(base64.b64decode(key)) == 16
    with pytest.raises(ProtocolError) as err:
        check_h2_request(handshake(sec_websocket_version=b"12"))
    assert err.value.status == 426


def frames_of(sizes: list[int], masked: bool) -> tuple[bytes, list[int]]:
    """Frames of the given payload sizes, as wsproto writes them; and where each ends."""
    conn = wsproto.connection.Connection(
        wsproto.connection.ConnectionType.CLIENT
        if masked
        else wsproto.connection.ConnectionType.SERVER
    )
    data = b""
    ends = []
    for size in sizes:
        data += conn.send(wsproto.events.BytesMessage(b"x" * size))
        ends.append(len(data))
    return data, ends


@given(
    st.lists(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]), min_size=1, max_size=6),
    st.booleans(),
    st.lists(st.integers(1, 80000), max_size=20),
)
def test_the_walker_finds_every_boundary_however_reads_cut(
    sizes: list[int], masked: bool, cuts: list[int]
) -> None:
    data, ends = frames_of(sizes, masked)
    points = sorted({c % len(data) for c in cuts} | {len(data)})
    walker = FrameWalker()
    start = 0
    for point in points:
        if point <= start:
            continue
        walker.feed(memoryview(data)[start:point])
        start = point
        assert walker.at_boundary == (point in ends)


def test_the_walker_notes_a_close_and_trilbs_frames_parse() -> None:
    walker = FrameWalker()
    walker.feed(frame(0x9, b"trilb", masked=False))
    assert walker.at_boundary and not walker.saw_close
    walker.feed(close_frame(1001, masked=True)[:3])
    assert walker.saw_close and not walker.at_boundary
    server = wsproto.connection.Connection(wsproto.connection.ConnectionType.SERVER)
    server.receive_data(close_frame(1001, masked=True))
    events = list(server.events())
    assert isinstance(events[0], wsproto.events.CloseConnection) and events[0].code == 1001
    client = wsproto.connection.Connection(wsproto.connection.ConnectionType.CLIENT)
    client.receive_data(frame(0x9, b"trilb", masked=False))
    events = list(client.events())
    assert isinstance(events[0], wsproto.events.Ping) and events[0].payload == b"trilb"
