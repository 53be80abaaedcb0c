"""HTTP/2 as a server speaks it to clients (RFC 9113): frames in, callbacks out; sans-IO.

Theory of operation. The `h2` library did this job first, and a profile of trilb under
h2load put h2, hyperframe and hpack at over half of a worker's CPU per request: a state
machine walked per frame, an event object per happening, frame objects, logging calls
that format their arguments. A proxy's side of a client connection needs far less: it
never pushes, never prioritizes, never opens streams. So this module keeps only the
state RFC 9113 makes a server keep (each stream's halves and windows, the connection's
windows and the peer's settings) and turns each frame into at most one call on its
``handler`` (l7/http2.H2Server), made while the bytes are parsed: the handler's answer
to a request (a 400, a reset) is in effect for the next frame already.

- In: ``receive_data`` parses the preface and frames, checks them (frame sizes, stream
  ids and states, padding, flow control, SETTINGS values, CONTINUATION order and count,
  the decoded header list's size, a body against its content-length) and calls the
  handler. A connection error queues a GOAWAY and raises H2ConnectionError; a stream
  error queues a RST_STREAM and tells the handler (``on_reset``).
- Out: ``send_headers``, ``send_data``, ``end_stream``, ``reset_stream`` and
  ``close_connection`` queue frames; ``data_to_send`` takes them. Header blocks are
  encoded and decoded by l7/h2hpack.py.
- Flow control: the handler acknowledges request DATA once relayed
  (``acknowledge_received_data``); WINDOW_UPDATEs go out when half a window is owed.
  The send side keeps the client's windows; ``local_flow_control_window`` says how much
  a stream may send (the names FrameWriter, l7/h2write.py, also finds on h2's client).

It does not decide what a request means (l7/h2head.py), answer it (l7/h2stream.py) or
write to a socket (l7/http2.py).
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

from trilb.l7.h2hpack import CompressionError, Decoder, Encoder, Fields, HeaderListTooLarge

# Error codes (RFC 9113 section 7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB
ERROR_NAMES: Final = {
    NO_ERROR: "NO_ERROR", PROTOCOL_ERROR: "PROTOCOL_ERROR", INTERNAL_ERROR: "INTERNAL_ERROR",
    FLOW_CONTROL_ERROR: "FLOW_CONTROL_ERROR", STREAM_CLOSED: "STREAM_CLOSED",
    FRAME_SIZE_ERROR: "FRAME_SIZE_ERROR", REFUSED_STREAM: "REFUSED_STREAM",
    COMPRESSION_ERROR: "COMPRESSION_ERROR", ENHANCE_YOUR_CALM: "ENHANCE_YOUR_CALM",
}  # fmt: skip

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
# Flags.
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Settings.
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65535
DEFAULT_FRAME: Final = 16384
# CONTINUATION frames one header block may take (h2's limit too): more is a flood.
MAX_CONTINUATIONS: Final = 64
# Frames queued and not yet taken by the writer: a client that sends and does not read
# makes trilb answer (acks, resets) into a queue only this long (then ENHANCE_YOUR_CALM).
MAX_QUEUED: Final = 4096

# length (24 bits as 16 + 8), type, flags, stream id.
_HEAD = struct.Struct(">HBBBL")
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")


class H2Error(Exception):
    """Something this connection's HTTP/2 state refuses (a closed stream, a full window,
    a broken connection)."""


class StreamClosedError(H2Error):
    """The stream is not open for sending (reset, ended or unknown)."""


class FlowControlError(H2Error):
    """More DATA than the client's windows or its frame size allow."""


class H2ConnectionError(H2Error):
    """A connection error: a GOAWAY with ``error_code`` is queued; the connection is over."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class Handler(Protocol):
    """What the connection's owner is told, in the order the frames came.

    ``on_reset``: a stream was reset by the client, or by trilb for what the client did
    (each costs trilb work, so both count against a budget: CVE-2023-44487 and 2025-8671);
    the stream may be one the handler never heard of. ``on_idle_frame``: a frame that
    carries nothing (an empty DATA, a PRIORITY, an unknown type): a flood of them is an
    attack (CVE-2019-9518). ``on_window``: a send window that was spent has room again.
    """

    def on_request(self, stream_id: int, fields: Fields, ended: bool) -> None: ...
    def on_data(self, stream_id: int, data: bytes, flowed: int, ended: bool) -> None: ...
    def on_trailers(self, stream_id: int, fields: Fields) -> None: ...
    def on_reset(self, stream_id: int) -> None: ...
    def on_ping(self) -> None: ...
    def on_idle_frame(self) -> None: ...
    def on_settings(self) -> None: ...
    def on_window(self) -> None: ...
    def on_goaway(self) -> None: ...


class _Stream:
    """One stream's state: which halves are open, its windows, the body still due."""

    __slots__ = ("credit", "inwin", "left", "outwin", "recv", "send")

    def __init__(self, outwin: int, ended: bool) -> None:
        self.recv = not ended  # the client may still send on it
        self.send = True  # trilb may still send on it
        self.inwin = DEFAULT_WINDOW
        self.outwin = outwin
        self.credit = 0  # acknowledged bytes not yet given back by a WINDOW_UPDATE
        self.left = -1  # the content-length still due; -1: none given


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame's bytes."""
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def goaway_frame(last_stream_id: int, error_code: int = NO_ERROR) -> bytes:
    return frame(GOAWAY, 0, 0, _U32.pack(last_stream_id) + _U32.pack(error_code))


class H2Protocol:
    """One client connection's HTTP/2 state, server side.

    Args:
      handler: told of requests, DATA, trailers, resets and control frames.
      max_streams: the concurrent streams a client may open (more: REFUSED_STREAM).
      max_header_list: the largest decoded header list (RFC 9113 SETTINGS_MAX_HEADER_
        LIST_SIZE); a larger one is a connection error (ENHANCE_YOUR_CALM): HPACK's state
        cannot be trusted after a block decoded in part.
      connection_window: the connection's receive window (each stream's is 64 KiB).
    """

    def __init__(
        self, handler: Handler, max_streams: int, max_header_list: int, connection_window: int
    ) -> None:
        self.handler = handler
        self.max_streams = max_streams
        self.max_header_list = max_header_list
        self.streams: dict[int, _Stream] = {}
        self.highest_inbound_stream_id = 0
        self.closed = False
        self._out: list[bytes] = []
        self._buf = b""
        self._preface = True  # the client's preface is still due
        self._settled = False  # its first SETTINGS came
        # A header block in CONTINUATION frames: its stream, flags, parts so far.
        self._block_sid = 0
        self._block_flags = 0
        self._block: list[bytes] = []
        self._block_size = 0
        self._decoder = Decoder(max_header_list)
        self._encoder = Encoder()
        self.in_window = connection_window
        self._window_target = connection_window
        self._conn_credit = connection_window - DEFAULT_WINDOW  # given by ``initiate``
        self.out_window = DEFAULT_WINDOW
        self.initial_out = DEFAULT_WINDOW
        self.max_outbound_frame_size = DEFAULT_FRAME
        self._dispatch = (
            self._data, self._headers, self._priority, self._rst_stream, self._settings,
            self._push_promise, self._ping, self._goaway, self._window_update,
            self._continuation,
        )  # fmt: skip

    # --- the connection ---------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the server preface: our SETTINGS, and the connection window's growth."""
        settings = (
            (MAX_CONCURRENT_STREAMS, self.max_streams),
            (MAX_HEADER_LIST_SIZE, self.max_header_list),
            (ENABLE_CONNECT_PROTOCOL, 1),  # RFC 8441: WebSocket over a stream
        )
        self._out.append(frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(*s) for s in settings)))
        if self._conn_credit:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._conn_credit)))
            self._conn_credit = 0

    def close_connection(self, error_code: int = NO_ERROR) -> None:
        """Queue a GOAWAY with the last stream seen; nothing more is received or sent."""
        if not self.closed:
            self.closed = True
            self._out.append(goaway_frame(self.highest_inbound_stream_id, error_code))

    def goaway(self, last_stream_id: int) -> None:
        """Queue a GOAWAY (NO_ERROR) that keeps the connection open: the streams up to
        ``last_stream_id`` go on (a drain)."""
        self._out.append(goaway_frame(last_stream_id))

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    # --- receiving ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Parse the client's bytes, calling the handler for each frame that means
        something to it.

        Raises:
          H2ConnectionError: a connection error (its GOAWAY is queued), also one the
            handler raised (a flood it will not serve).
        """
        if self.closed:
            return
        buf = self._buf + data if self._buf else data
        try:
            if self._preface:
                if len(buf) < 24:
                    if not PREFACE.startswith(buf):
                        raise H2ConnectionError(PROTOCOL_ERROR, "not the HTTP/2 preface")
                    self._buf = buf
                    return
                if buf[:24] != PREFACE:
                    raise H2ConnectionError(PROTOCOL_ERROR, "not the HTTP/2 preface")
                self._preface = False
                buf = buf[24:]
            pos, end = 0, len(buf)
            dispatch = self._dispatch
            while end - pos >= 9:
                hi, lo, kind, flags, sid = _HEAD.unpack_from(buf, pos)
                length = hi << 8 | lo
                if length > DEFAULT_FRAME:  # (the largest we allow: we advertise no other)
                    raise H2ConnectionError(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                stop = pos + 9 + length
                if stop > end:
                    break
                payload = buf[pos + 9 : stop]
                pos = stop
                sid &= 0x7FFFFFFF
                if self._block_sid and kind != CONTINUATION:
                    raise H2ConnectionError(PROTOCOL_ERROR, "a header block interrupted")
                if not self._settled and (kind != SETTINGS or flags & ACK):
                    raise H2ConnectionError(PROTOCOL_ERROR, "the preface's SETTINGS missing")
                if kind < 10:
                    dispatch[kind](flags, sid, payload)
                    if self.closed:
                        return
                else:
                    self.handler.on_idle_frame()  # (an unknown type is ignored: 5.5)
            self._buf = buf[pos:]
            if len(self._out) > MAX_QUEUED:
                raise H2ConnectionError(ENHANCE_YOUR_CALM, "a client that does not read")
        except H2ConnectionError as exc:
            self.close_connection(exc.error_code)
            self._buf = b""
            raise

    def _unpad(self, payload: bytes) -> bytes:
        if not payload or payload[0] >= len(payload):
            raise H2ConnectionError(PROTOCOL_ERROR, "padding as long as the frame")
        return payload[1 : len(payload) - payload[0]]

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        flowed = len(payload)
        if sid == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        if flags & PADDED:
            payload = self._unpad(payload)
        self.in_window -= flowed
        if self.in_window < 0:
            raise H2ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        stream = self.streams.get(sid)
        if stream is None or not stream.recv:
            if sid > self.highest_inbound_stream_id or not sid & 1:
                raise H2ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            # A closed stream's (it may have been sent before our reset reached the
            # client): ignored, its share of the connection window given back.
            self.acknowledge_received_data(flowed, sid)
            if stream is not None:  # half-closed (remote): the client broke its own END
                self._stream_error(sid, STREAM_CLOSED)
            return
        stream.inwin -= flowed
        if stream.inwin < 0:
            self._stream_error(sid, FLOW_CONTROL_ERROR)
            self.acknowledge_received_data(flowed, sid)  # (the connection's share)
            return
        ended = flags & END_STREAM != 0
        if not flowed and not ended:
            self.handler.on_idle_frame()
            return
        if stream.left >= 0:
            stream.left -= len(payload)
            if stream.left < 0 or (ended and stream.left):
                raise H2ConnectionError(
                    PROTOCOL_ERROR, f"stream {sid}: body and content-length differ"
                )
        if ended:
            stream.recv = False
            if not stream.send:
                del self.streams[sid]
        self.handler.on_data(sid, payload, flowed, ended)

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
        flags &= END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG  # (others mean nothing)
        if flags & PADDED:
            payload = self._unpad(payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
                flags |= PRIORITY_FLAG << 1  # (a self-dependency: a stream error, below)
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(sid, flags, payload)
        else:
            self._block_sid, self._block_flags = sid, flags
            self._block = [payload]
            self._block_size = len(payload)

    def _continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != self._block_sid or sid == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        self._block.append(payload)
        self._block_size += len(payload)
        if len(self._block) > MAX_CONTINUATIONS + 1:
            raise H2ConnectionError(PROTOCOL_ERROR, "too many CONTINUATION frames")
        if self._block_size > self.max_header_list + DEFAULT_FRAME:
            # Encoded, a field is never much larger than its decoded size: over the limit.
            raise H2ConnectionError(ENHANCE_YOUR_CALM, "a header block over the limit")
        if flags & END_HEADERS:
            block = b"".join(self._block)
            self._block_sid, self._block = 0, []
            self._header_block(sid, self._block_flags, block)

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:
            fields = self._decoder.decode(block)
        except HeaderListTooLarge:
            raise H2ConnectionError(ENHANCE_YOUR_CALM, "a header list over the limit") from None
        except CompressionError as exc:
            raise H2ConnectionError(COMPRESSION_ERROR, f"header block: {exc}") from None
        ended = flags & END_STREAM != 0
        stream = self.streams.get(sid)
        if stream is not None:  # trailers
            if not stream.recv:
                self._stream_error(sid, STREAM_CLOSED)
            elif not ended:
                self._stream_error(sid, PROTOCOL_ERROR)  # (a second block must end it)
            elif stream.left > 0:
                raise H2ConnectionError(
                    PROTOCOL_ERROR, f"stream {sid}: body shorter than its content-length"
                )
            else:
                stream.recv = False
                if not stream.send:
                    del self.streams[sid]
                self.handler.on_trailers(sid, fields)
            return
        if not sid & 1:
            raise H2ConnectionError(PROTOCOL_ERROR, f"stream {sid} opened by the client")
        if sid <= self.highest_inbound_stream_id:
            if not ended:  # (trailers end their stream: this would open a new one)
                raise H2ConnectionError(PROTOCOL_ERROR, f"stream {sid} opened out of order")
            return  # a closed stream's late trailers (decoded: HPACK's state moved on)
        self.highest_inbound_stream_id = sid
        if flags & PRIORITY_FLAG << 1:
            self._stream_error(sid, PROTOCOL_ERROR)
        elif len(self.streams) >= self.max_streams:
            self._stream_error(sid, REFUSED_STREAM)
        else:
            self.streams[sid] = _Stream(self.initial_out, ended)
            self.handler.on_request(sid, fields, ended)

    def _priority(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "PRIORITY of a length other than 5")
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid and sid in self.streams:
            self._stream_error(sid, PROTOCOL_ERROR)
        else:  # (priorities are ignored: RFC 9113 deprecates them)
            self.handler.on_idle_frame()

    def _rst_stream(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM of a length other than 4")
        if sid > self.highest_inbound_stream_id or not sid & 1:
            raise H2ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        self.streams.pop(sid, None)
        self.handler.on_reset(sid)

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "a SETTINGS ack with a payload")
            return
        if len(payload) % 6:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS of a length not a multiple of 6")
        window = -1
        for at in range(0, len(payload), 6):
            code, value = _SETTING.unpack_from(payload, at)
            if code == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2ConnectionError(
                        FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1"
                    )
                window = value  # (the last one counts: applied once, below)
            elif code == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 16777215:
                    raise H2ConnectionError(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.max_outbound_frame_size = value
            elif code == HEADER_TABLE_SIZE:
                self._encoder.resize(value)
            elif code in (ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL) and value > 1:
                raise H2ConnectionError(PROTOCOL_ERROR, f"setting {code} of value {value}")
        if window >= 0 and window != self.initial_out:
            delta = window - self.initial_out
            self.initial_out = window
            for stream in self.streams.values():
                stream.outwin += delta
                if stream.outwin > MAX_WINDOW:
                    raise H2ConnectionError(FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
        self._settled = True
        self._out.append(frame(SETTINGS, ACK, 0))
        self.handler.on_settings()

    def _push_promise(self, flags: int, sid: int, payload: bytes) -> None:
        raise H2ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")

    def _ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "PING of a length other than 8")
        if not flags & ACK:
            self._out.append(frame(PING, ACK, 0, payload))
        self.handler.on_ping()

    def _goaway(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        self.handler.on_goaway()

    def _window_update(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a length other than 4")
        grow = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if not grow:
                raise H2ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            spent = self.out_window <= 0
            self.out_window += grow
            if self.out_window > MAX_WINDOW:
                raise H2ConnectionError(FLOW_CONTROL_ERROR, "the connection window over 2^31-1")
        else:
            stream = self.streams.get(sid)
            if stream is None:
                if sid > self.highest_inbound_stream_id or not sid & 1:
                    raise H2ConnectionError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
                return  # (a closed stream's)
            if not grow:
                self._stream_error(sid, PROTOCOL_ERROR)
                return
            spent = stream.outwin <= 0 < self.out_window
            stream.outwin += grow
            if stream.outwin > MAX_WINDOW:
                self._stream_error(sid, FLOW_CONTROL_ERROR)
                return
        if spent:  # (a sender waits only on a spent window: waking them costs, else)
            self.handler.on_window()

    def _stream_error(self, sid: int, code: int) -> None:
        self._out.append(frame(RST_STREAM, 0, sid, _U32.pack(code)))
        self.streams.pop(sid, None)
        self.handler.on_reset(sid)

    def expect_length(self, stream_id: int, length: int) -> None:
        """The request's content-length: its DATA must add up to it (RFC 9113 8.1.1)."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.left = length

    def acknowledge_received_data(self, flowed: int, stream_id: int) -> None:
        """``flowed`` bytes of a stream's DATA were taken: the client may send as much
        again (the window updates go out in halves of a window)."""
        self._conn_credit += flowed
        if self._conn_credit >= self._window_target >> 1:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._conn_credit)))
            self.in_window += self._conn_credit
            self._conn_credit = 0
        stream = self.streams.get(stream_id)
        if stream is not None and stream.recv:
            stream.credit += flowed
            if stream.credit >= DEFAULT_WINDOW >> 1:
                self._out.append(frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.credit)))
                stream.inwin += stream.credit
                stream.credit = 0

    # --- sending ------------------------------------------------------------------------

    def _sending(self, sid: int) -> _Stream:
        stream = self.streams.get(sid)
        if stream is None or not stream.send or self.closed:
            raise StreamClosedError(f"stream {sid} is closed")
        return stream

    def send_headers(self, stream_id: int, fields: Fields, end_stream: bool = False) -> None:
        """Queue a header block (response head or trailers); names must be lowercase.

        Raises:
          StreamClosedError: the stream is not open for sending.
        """
        stream = self._sending(stream_id)
        try:
            block = self._encoder.encode(fields)
        except Exception:  # (a field not bytes: a bug; the table is out of step now)
            self.close_connection(INTERNAL_ERROR)
            raise
        flags = END_STREAM if end_stream else 0
        size = self.max_outbound_frame_size
        if len(block) <= size:
            self._out.append(frame(HEADERS, flags | END_HEADERS, stream_id, block))
        else:
            self._out.append(frame(HEADERS, flags, stream_id, block[:size]))
            for at in range(size, len(block), size):
                last = END_HEADERS if at + size >= len(block) else 0
                self._out.append(frame(CONTINUATION, last, stream_id, block[at : at + size]))
        if end_stream:
            self._end(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue one DATA frame; it must fit ``local_flow_control_window`` and a frame.

        Raises:
          StreamClosedError: the stream is not open for sending.
          FlowControlError: ``data`` does not fit.
        """
        stream = self._sending(stream_id)
        n = len(data)
        if n > self.out_window or n > stream.outwin or n > self.max_outbound_frame_size:
            raise FlowControlError(f"stream {stream_id}: {n} bytes over the window")
        self.out_window -= n
        stream.outwin -= n
        self._out.append(frame(DATA, END_STREAM if end_stream else 0, stream_id, data))
        if end_stream:
            self._end(stream_id, stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", end_stream=True)

    def _end(self, sid: int, stream: _Stream) -> None:
        stream.send = False
        if not stream.recv:
            del self.streams[sid]

    def reset_stream(self, stream_id: int, error_code: int = NO_ERROR) -> None:
        """Queue a RST_STREAM; the stream is closed both ways.

        Raises:
          StreamClosedError: it was closed already.
        """
        if self.streams.pop(stream_id, None) is None or self.closed:
            raise StreamClosedError(f"stream {stream_id} is closed")
        self._out.append(frame(RST_STREAM, 0, stream_id, _U32.pack(error_code)))

    def local_flow_control_window(self, stream_id: int) -> int:
        """How many bytes of DATA the stream may send now.

        Raises:
          StreamClosedError: the stream is not open for sending.
        """
        return min(self.out_window, self._sending(stream_id).outwin)
