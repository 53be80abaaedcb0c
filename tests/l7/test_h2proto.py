"""trilb's server side of HTTP/2 (l7/h2proto.py), without sockets: the h2 library plays the
client, and what trilb queues is read back by it (or by hyperframe, for raw frames)."""

from __future__ import annotations

import random
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame

from trilb.l7.h2proto import (
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
    FlowControlError,
    H2ConnectionError,
    H2Protocol,
    StreamClosedError,
    frame,
)

REQUEST = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"x")]
LIMIT = 16 << 10


class Recorder:
    """A handler that notes each call; ``calm`` makes a reset or a PING a flood."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.calm = False

    def on_request(self, sid: int, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.calls.append(("request", sid, [tuple(f) for f in fields], ended))

    def on_data(self, sid: int, data: bytes, flowed: int, ended: bool) -> None:
        self.calls.append(("data", sid, data, flowed, ended))

    def on_trailers(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        self.calls.append(("trailers", sid, [tuple(f) for f in fields]))

    def on_reset(self, sid: int) -> None:
        self.calls.append(("reset", sid))
        if self.calm:
            raise H2ConnectionError(ENHANCE_YOUR_CALM, "too many resets")

    def on_ping(self) -> None:
        self.calls.append(("ping",))

    def on_idle_frame(self) -> None:
        self.calls.append(("idle",))

    def on_settings(self) -> None:
        self.calls.append(("settings",))

    def on_window(self) -> None:
        self.calls.append(("window",))

    def on_goaway(self) -> None:
        self.calls.append(("goaway",))

    def kinds(self) -> list[object]:
        return [c[0] for c in self.calls]


class Pair:
    """A trilb server and an h2 client, each fed the other's bytes on ``exchange``."""

    def __init__(
        self, max_streams: int = 100, client_settings: dict[int, int] | None = None
    ) -> None:
        self.handler = Recorder()
        self.server = H2Protocol(self.handler, max_streams, LIMIT, 1 << 20)
        self.server.initiate()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config)
        self.client.initiate_connection()
        if client_settings:
            self.client.update_settings(client_settings)
        self.events: list[h2.events.Event] = []
        self.exchange()

    def exchange(self) -> None:
        """Until both are quiet: the client's bytes to trilb, trilb's to the client."""
        while True:
            out = self.client.data_to_send()
            if out:
                self.server.receive_data(out)
            back = self.server.data_to_send()
            if back:
                self.events += self.client.receive_data(back)
            if not out and not back:
                return

    def raw(self, data: bytes) -> list[Frame]:
        """Give trilb raw bytes after the handshake; the frames it answers with."""
        self.server.receive_data(data)
        return frames(self.server.data_to_send())

    def failing(self, data: bytes) -> tuple[int, list[Frame]]:
        """Raw bytes that must be a connection error: its code, and the frames queued."""
        with pytest.raises(H2ConnectionError) as caught:
            self.server.receive_data(data)
        sent = frames(self.server.data_to_send())
        goaway = [f for f in sent if isinstance(f, GoAwayFrame)]
        assert len(goaway) == 1 and goaway[0].error_code == caught.value.error_code
        return caught.value.error_code, sent

    def of(self, kind: type) -> list[h2.events.Event]:
        return [e for e in self.events if isinstance(e, kind)]


def frames(data: bytes) -> list[Frame]:
    out = []
    while data:
        parsed, length = Frame.parse_frame_header(memoryview(data[:9]))
        parsed.parse_body(memoryview(data[9 : 9 + length]))
        out.append(parsed)
        data = data[9 + length :]
    return out


def block(fields: list[tuple[bytes, bytes]]) -> bytes:
    return hpack.Encoder().encode(fields)


def resets(sent: list[Frame]) -> list[tuple[int, int]]:
    return [(f.stream_id, f.error_code) for f in sent if isinstance(f, RstStreamFrame)]


# --- the exchange ---------------------------------------------------------------------


def test_a_request_and_its_response_round_trip() -> None:
    pair = Pair()
    settings = pair.of(h2.events.RemoteSettingsChanged)[0].changed_settings
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 100
    assert settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE].new_value == LIMIT
    assert settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL].new_value == 1
    assert pair.client.outbound_flow_control_window == 1 << 20  # (the WINDOW_UPDATE)
    pair.client.send_headers(1, [*REQUEST, (b"accept", b"*/*")], end_stream=True)
    pair.exchange()
    assert pair.handler.calls[-1] == ("request", 1, [*REQUEST, (b"accept", b"*/*")], True)
    response = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"x-odd", b"v" * 300),
                (b"content-length", b"5")]  # fmt: skip
    pair.server.send_headers(1, response)
    pair.server.send_data(1, b"hello", end_stream=True)
    pair.exchange()
    assert [list(e.headers) for e in pair.of(h2.events.ResponseReceived)] == [response]
    assert [e.data for e in pair.of(h2.events.DataReceived)] == [b"hello"]
    assert len(pair.of(h2.events.StreamEnded)) == 1
    assert not pair.server.streams  # closed both ways: forgotten
    with pytest.raises(StreamClosedError):
        pair.server.send_data(1, b"more")


def test_a_header_block_over_a_frame_goes_on_in_continuation_frames() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    big = [(b":status", b"200"), *[(b"x-%d" % i, b"v" * 10000) for i in range(4)]]
    pair.server.send_headers(1, big, end_stream=True)
    sent = pair.server.data_to_send()
    assert [type(f).__name__ for f in frames(sent)] == [
        "HeadersFrame", "ContinuationFrame", "ContinuationFrame"]  # fmt: skip
    pair.events += pair.client.receive_data(sent)
    assert [list(e.headers) for e in pair.of(h2.events.ResponseReceived)] == [big]


def test_a_client_shrinking_its_header_table_gets_a_size_update() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    pair.server.send_headers(1, [(b":status", b"200")], end_stream=True)
    sent = pair.server.data_to_send()
    assert frames(sent)[0].data[:1] == b"\x20"  # (nghttp2 refuses a block without it)
    pair.events += pair.client.receive_data(sent)
    assert len(pair.of(h2.events.ResponseReceived)) == 1


def test_a_body_trailers_padding_and_windows() -> None:
    pair = Pair()
    pair.client.send_headers(1, [*REQUEST, (b"content-length", b"40000")])
    pair.exchange()
    pair.server.expect_length(1, 40000)
    pair.client.send_data(1, b"a" * 10000, pad_length=20)
    pair.client.send_data(1, b"b" * 16384)
    pair.client.send_data(1, b"b" * 13616)
    pair.client.send_headers(1, [(b"x-sum", b"1")], end_stream=True)
    pair.exchange()
    data = [c for c in pair.handler.calls if c[0] == "data"]
    assert [(len(c[2]), c[3]) for c in data] == [(10000, 10021), (16384, 16384), (13616, 13616)]
    assert pair.handler.calls[-1] == ("trailers", 1, [(b"x-sum", b"1")])
    before = pair.client.outbound_flow_control_window
    for call in data:
        pair.server.acknowledge_received_data(call[3], 1)
    pair.exchange()  # the connection's half window is not owed yet: nothing back
    assert pair.client.outbound_flow_control_window == before
    pair.server.acknowledge_received_data(1 << 19, 1)
    pair.exchange()
    assert pair.client.outbound_flow_control_window > before


def test_the_stream_window_is_given_back_in_halves_while_the_body_flows() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST)
    pair.exchange()
    pair.client.send_data(1, b"a" * 16384)
    pair.client.send_data(1, b"a" * 16384)
    pair.exchange()
    assert pair.client.local_flow_control_window(1) == 65535 - 32768
    pair.server.acknowledge_received_data(32768, 1)
    pair.exchange()
    assert pair.client.local_flow_control_window(1) == 65535


def test_the_send_side_keeps_the_clients_windows() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    pair.server.send_headers(1, [(b":status", b"200")])
    for _ in range(3):
        pair.server.send_data(1, b"x" * 16384)
    assert pair.server.local_flow_control_window(1) == 65535 - 3 * 16384
    with pytest.raises(FlowControlError):
        pair.server.send_data(1, b"x" * 16384)  # over the window
    pair.exchange()
    pair.client.increment_flow_control_window(200000)
    pair.client.increment_flow_control_window(100000, stream_id=1)
    pair.exchange()
    assert pair.server.local_flow_control_window(1) == 65535 - 3 * 16384 + 100000
    # A new initial window moves the open streams' windows by the difference.
    pair.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535 + 10})
    pair.exchange()
    assert pair.server.local_flow_control_window(1) == 65535 - 3 * 16384 + 100010


# --- what the client gets wrong ----------------------------------------------------------


def test_a_body_longer_or_shorter_than_its_content_length_is_a_connection_error() -> None:
    for sent, end in ((b"x" * 11, False), (b"x" * 5, True)):
        pair = Pair()
        pair.client.send_headers(1, [*REQUEST, (b"content-length", b"10")])
        pair.exchange()
        pair.server.expect_length(1, 10)
        code, _ = pair.failing(frame(0, int(end), 1, sent))
        assert code == PROTOCOL_ERROR
    pair = Pair()
    pair.client.send_headers(1, [*REQUEST, (b"content-length", b"10")])
    pair.exchange()
    pair.server.expect_length(1, 10)
    code, _ = pair.failing(frame(1, 0x5, 1, block([(b"x-t", b"1")])))  # trailers, body short
    assert code == PROTOCOL_ERROR


def test_trailers_that_do_not_end_the_stream_reset_it() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST)
    pair.exchange()
    sent = pair.raw(frame(1, 0x4, 1, block([(b"x-t", b"1")])))
    assert resets(sent) == [(1, PROTOCOL_ERROR)]
    assert pair.handler.calls[-1] == ("reset", 1)


def test_header_blocks_in_continuation_frames_and_their_abuse() -> None:
    pair = Pair()
    whole = block(REQUEST)
    pair.raw(frame(1, 0x1, 1, whole[:3]) + frame(9, 0, 1, whole[3:6]) + frame(9, 0x4, 1, whole[6:]))
    assert pair.handler.calls[-1] == ("request", 1, REQUEST, True)
    # Another frame inside a block, a CONTINUATION of nothing, and a flood of them.
    interrupted = frame(1, 0x1, 3, whole[:3]) + frame(6, 0, 0, b"12345678")
    assert Pair().failing(interrupted)[0] == PROTOCOL_ERROR
    assert Pair().failing(frame(9, 0x4, 1, whole))[0] == PROTOCOL_ERROR
    flood = frame(1, 0x1, 1, whole) + frame(9, 0, 1, b"\x40\x01a\x01b") * 100
    assert Pair().failing(flood)[0] == PROTOCOL_ERROR


def test_header_lists_over_the_limit_and_broken_hpack_end_the_connection() -> None:
    fields = [*REQUEST, *[(b"x-big", b"b" * 4000)] * 10]  # indexed: small on the wire
    assert len(block(fields)) < 5000
    assert Pair().failing(frame(1, 0x5, 1, block(fields)))[0] == ENHANCE_YOUR_CALM
    long_block = frame(1, 0x1, 1, b"\x00" * 16384) + frame(9, 0, 1, b"\x00" * 16384) * 2
    assert Pair().failing(long_block)[0] == ENHANCE_YOUR_CALM  # (never decoded)
    assert Pair().failing(frame(1, 0x5, 1, b"\xff\xff\xff\xff"))[0] == COMPRESSION_ERROR


def test_streams_over_the_limit_are_refused_and_others_go_on() -> None:
    pair = Pair(max_streams=2)
    for sid in (1, 3):
        pair.client.send_headers(sid, REQUEST, end_stream=True)
    pair.exchange()
    assert resets(pair.raw(frame(1, 0x5, 5, block(REQUEST)))) == [(5, REFUSED_STREAM)]
    assert [c[1] for c in pair.handler.calls if c[0] == "request"] == [1, 3]
    pair.server.send_headers(1, [(b":status", b"200")], end_stream=True)
    pair.raw(frame(1, 0x5, 7, block(REQUEST)))
    assert pair.handler.calls[-1][:2] == ("request", 7)


def test_windows_pushed_past_the_maximum() -> None:
    assert Pair().failing(frame(8, 0, 0, struct.pack(">L", 2**31 - 1)))[0] == FLOW_CONTROL_ERROR
    settings = frame(4, 0, 0, struct.pack(">HL", 4, 2**31))
    assert Pair().failing(settings)[0] == FLOW_CONTROL_ERROR
    assert Pair().failing(frame(8, 0, 0, struct.pack(">L", 0)))[0] == PROTOCOL_ERROR
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    sent = pair.raw(frame(8, 0, 1, struct.pack(">L", 2**31 - 1)))
    assert resets(sent) == [(1, FLOW_CONTROL_ERROR)]
    assert pair.handler.calls[-1] == ("reset", 1)


def test_a_client_sending_past_its_stream_window_has_that_stream_reset() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST)
    pair.exchange()
    sent = pair.raw(frame(0, 0, 1, b"x" * 16384) * 4 + frame(0, 0, 1, b"x" * 100))
    assert resets(sent) == [(1, FLOW_CONTROL_ERROR)]
    # (the three frames taken are the handler's to acknowledge; the rest is given back)
    assert pair.server.in_window + pair.server._conn_credit == (1 << 20) - 3 * 16384


def test_frames_on_closed_and_idle_streams() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST)
    pair.exchange()
    pair.server.reset_stream(1, 8)
    pair.server.data_to_send()
    calls = len(pair.handler.calls)
    assert pair.raw(frame(0, 0, 1, b"late")) == []  # in flight when the reset left: ignored
    assert len(pair.handler.calls) == calls
    assert pair.server.in_window + pair.server._conn_credit == 1 << 20
    with pytest.raises(StreamClosedError):
        pair.server.reset_stream(1)
    idle = (frame(0, 0, 9, b"x"), frame(3, 0, 9, b"\0\0\0\0"), frame(1, 0x5, 2, block(REQUEST)),
            frame(0, 0, 0, b"x"), frame(5, 0x4, 1, b"\0\0\0\2"))  # fmt: skip
    for data in idle:
        assert Pair().failing(data)[0] == PROTOCOL_ERROR


def test_data_after_the_clients_end_of_stream_is_stream_closed() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    assert resets(pair.raw(frame(0, 0, 1, b"x"))) == [(1, STREAM_CLOSED)]


def test_resets_pings_settings_and_goaway_reach_the_handler() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST)
    pair.client.reset_stream(1)
    pair.client.ping(b"12345678")
    pair.exchange()
    assert pair.handler.calls[-2:] == [("reset", 1), ("ping",)]
    assert [e.ping_data for e in pair.of(h2.events.PingAckReceived)] == [b"12345678"]
    assert not pair.server.streams
    pair.client.close_connection()
    pair.exchange()
    assert pair.handler.calls[-1] == ("goaway",)


def test_a_flood_the_handler_refuses_ends_the_connection_with_its_code() -> None:
    pair = Pair()
    pair.handler.calm = True
    pair.client.send_headers(1, REQUEST)
    pair.client.reset_stream(1)
    code, _ = pair.failing(pair.client.data_to_send())
    assert code == ENHANCE_YOUR_CALM
    assert pair.server.data_to_send() == b"" and pair.raw(frame(6, 0, 0, b"12345678")) == []


def test_malformed_frames_and_prefaces() -> None:
    sizes = (frame(6, 0, 0, b"1234567"), frame(3, 0, 1, b"\0"), frame(4, 1, 0, b"x"),
             frame(4, 0, 0, b"\0" * 5), frame(2, 0, 1, b"\0" * 4),
             frame(0, 0, 1, b"x" * 16385))  # fmt: skip
    for data in sizes:
        assert Pair().failing(data)[0] == FRAME_SIZE_ERROR, data[:9]
    values = (frame(4, 0, 0, struct.pack(">HL", 2, 2)), frame(4, 0, 0, struct.pack(">HL", 5, 99)),
              frame(0, 0x8, 1, b"\x05abc"), frame(6, 0, 1, b"12345678"))  # fmt: skip
    for data in values:
        assert Pair().failing(data)[0] == PROTOCOL_ERROR, data[:9]
    fresh = H2Protocol(Recorder(), 10, LIMIT, 1 << 20)
    fresh.receive_data(b"PRI * HTTP/2.0\r\n")  # part of the preface: waits for the rest
    with pytest.raises(H2ConnectionError):
        fresh.receive_data(b"\r\nSM\r\n\r\n" + frame(6, 0, 0, b"12345678"))  # no SETTINGS first
    with pytest.raises(H2ConnectionError):
        H2Protocol(Recorder(), 10, LIMIT, 1 << 20).receive_data(b"GET / HTTP/1.1\r\n\r\n")


def test_ignored_frames_unknown_types_flags_and_priorities() -> None:
    pair = Pair()
    assert pair.raw(frame(0xFA, 0xFF, 1, b"whatever") + frame(2, 0, 1, b"\0\0\0\3\x10")) == []
    pair.raw(frame(1, 0x5 | 0x40 | 0x2, 1, block(REQUEST)))  # (undefined flags mean nothing)
    assert pair.handler.calls[-1] == ("request", 1, REQUEST, True)
    sent = pair.raw(frame(1, 0x25, 3, b"\0\0\0\3\x10" + block(REQUEST)))  # depends on itself
    assert resets(sent) == [(3, PROTOCOL_ERROR)]


def test_bytes_in_any_pieces_make_the_same_calls() -> None:
    whole = Pair()
    pieces = Pair()
    for pair in (whole, pieces):
        pair.client.send_headers(1, [*REQUEST, (b"content-length", b"3")])
        pair.client.send_data(1, b"abc", end_stream=True, pad_length=3)
        pair.client.ping(b"abcdefgh")
    data = whole.client.data_to_send()
    assert data == pieces.client.data_to_send()
    whole.server.receive_data(data)
    for at in range(len(data)):
        pieces.server.receive_data(data[at : at + 1])
    assert whole.handler.calls == pieces.handler.calls
    assert whole.server.data_to_send() == pieces.server.data_to_send()


def test_random_frames_are_handled_or_refused_never_crash() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        pair = Pair()
        pair.client.send_headers(1, [*REQUEST, (b"content-length", b"4")])
        pair.exchange()
        data = b"".join(
            frame(rng.randrange(12), rng.randrange(256), rng.choice((0, 1, 2, 3, 5)),
                  rng.randbytes(rng.choice((0, 1, 4, 5, 8, 9, rng.randrange(64)))))
            for _ in range(rng.randrange(1, 6))
        )  # fmt: skip
        try:
            pair.server.receive_data(data)
        except H2ConnectionError:
            assert pair.server.closed
        frames(pair.server.data_to_send())  # (well-formed frames, whatever came)


# --- what the review of this module found ------------------------------------------------


def test_resets_trilb_makes_for_what_the_client_did_reach_the_handler_too() -> None:
    # (each is a backend exchange thrown away: they count as the client's resets do)
    pair = Pair(max_streams=1)
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    pair.raw(frame(8, 0, 1, b"\0\0\0\0"))  # a WINDOW_UPDATE of 0 on the stream
    assert pair.handler.calls[-1] == ("reset", 1)
    pair.raw(frame(1, 0x5, 3, block(REQUEST)))
    pair.raw(frame(1, 0x5, 5, block(REQUEST)))  # over the limit of 1: refused
    assert pair.handler.calls[-1] == ("reset", 5)
    pair.raw(frame(1, 0x25, 7, b"\0\0\0\7\x10" + block(REQUEST)))  # depends on itself
    assert pair.handler.calls[-1] == ("reset", 7)


def test_a_client_that_sends_and_never_reads_fills_a_bounded_queue() -> None:
    pair = Pair()
    with pytest.raises(H2ConnectionError) as caught:
        for _ in range(10):  # 5,000 PINGs, each acked into the queue nobody takes
            pair.server.receive_data(frame(6, 0, 0, b"12345678") * 500)
    assert caught.value.error_code == ENHANCE_YOUR_CALM


def test_frames_that_carry_nothing_are_counted_not_delivered() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST)
    pair.exchange()
    calls = len(pair.handler.calls)
    pair.raw(frame(0, 0, 1, b"") * 3 + frame(2, 0, 1, b"\0\0\0\3\x10") + frame(0x10, 0, 0, b"x"))
    assert pair.handler.calls[calls:] == [("idle",)] * 5
    pair.raw(frame(0, 1, 1, b""))  # (an empty DATA that ends the stream is one)
    assert pair.handler.calls[-1] == ("data", 1, b"", 0, True)


def test_a_settings_frame_moves_the_stream_windows_once() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    many = b"".join(struct.pack(">HL", 4, 1000 + i) for i in range(2000))
    pair.raw(frame(4, 0, 0, many))
    assert pair.server.initial_out == 2999
    assert pair.server.streams[1].outwin == 2999


def test_the_handler_hears_of_window_updates_only_when_a_spent_window_has_room() -> None:
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    pair.raw(frame(8, 0, 1, struct.pack(">L", 10)))  # room to spare: no one waits
    assert ("window",) not in pair.handler.calls
    pair.server.send_headers(1, [(b":status", b"200")])
    while room := min(pair.server.local_flow_control_window(1), 16384):
        pair.server.send_data(1, b"x" * room)
    assert (pair.server.out_window, pair.server.streams[1].outwin) == (0, 10)
    pair.raw(frame(8, 0, 1, struct.pack(">L", 5)))  # the connection's is the spent one
    assert ("window",) not in pair.handler.calls
    pair.raw(frame(8, 0, 0, struct.pack(">L", 5)))
    assert pair.handler.calls[-1] == ("window",)


def test_a_new_stream_below_the_highest_and_a_window_update_on_an_even_one() -> None:
    pair = Pair()
    pair.raw(frame(1, 0x5, 5, block(REQUEST)))
    assert pair.failing(frame(1, 0x4, 3, block(REQUEST)))[0] == PROTOCOL_ERROR
    pair = Pair()
    pair.raw(frame(1, 0x5, 5, block(REQUEST)))
    assert pair.raw(frame(1, 0x5, 3, block(REQUEST))) == []  # (ended: a closed one's trailers)
    assert pair.failing(frame(8, 0, 2, struct.pack(">L", 1)))[0] == PROTOCOL_ERROR


def test_long_fields_are_encoded_each_time_not_kept() -> None:
    pair = Pair()
    for sid in (1, 3):
        pair.client.send_headers(sid, REQUEST, end_stream=True)
        pair.exchange()
        pair.server.send_headers(sid, [(b":status", b"200"), (b"x-long", b"c" * 500)],
                                 end_stream=True)  # fmt: skip
        pair.exchange()
    assert not pair.server._encoder.seen and not pair.server._encoder.where
    assert [dict(e.headers)[b"x-long"] for e in pair.of(h2.events.ResponseReceived)] == [
        b"c" * 500
    ] * 2


def test_a_field_that_fails_to_encode_ends_the_connection() -> None:
    # (the table would be out of step with the client's for every later block)
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    with pytest.raises(TypeError):
        pair.server.send_headers(1, [(b":status", b"200"), (b"x-a", "not bytes")])  # type: ignore[list-item]
    assert pair.server.closed
    assert [f.error_code for f in frames(pair.server.data_to_send())
            if isinstance(f, GoAwayFrame)] == [2]  # fmt: skip
