"""The plugin phase chains and runners (l7/phases.py) and the body pass
(l7/bodyphase.py), without sockets: the body comes from a list of reads."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio

from trilb.errors import ProtocolError
from trilb.l7.bodyphase import BodyPass
from trilb.l7.phases import (
    Flow,
    MessageFailed,
    PluginReply,
    run_body,
    run_message,
)
from trilb.messages import Framing, ResponseHead
from trilb.plugin import CONTINUE, DROP, Context, Plugin, Replace, Reply, WsMessage
from trilb.plugin.chains import Chains


class Upper(Plugin):
    request_body_buffer = 100

    def on_request_body(self, ctx: Context, chunk: bytes, end: bool) -> object:
        ctx.vars.setdefault("seen", []).append((chunk, end))
        return Replace(chunk.upper())

    def on_response_body(self, ctx: Context, chunk: bytes, end: bool) -> object:
        return Replace(chunk + (b"!" if end else b""))

    def on_websocket_message(self, ctx: Context, message: WsMessage) -> object:
        return Replace(f"{message.data}+upper") if message.text else CONTINUE


class Hold(Plugin):
    """Holds the body back until its end, then gives it whole (reversed)."""

    request_body_buffer = 7

    def on_request_body(self, ctx: Context, chunk: bytes, end: bool) -> object:
        held = ctx.vars.setdefault("held", [])
        held.append(chunk)
        return Replace(b"".join(held)[::-1] if end else b"")

    def on_websocket_message(self, ctx: Context, message: WsMessage) -> object:
        return DROP if message.data == "drop" else Replace(f"{message.data}+hold")


class Odd(Plugin):
    def on_request_body(self, ctx: Context, chunk: bytes, end: bool) -> object:
        if chunk == b"reply":
            return Reply(413, b"no")
        if chunk == b"raise":
            raise RuntimeError("odd")
        if chunk == b"none":
            return None
        return CONTINUE

    def on_response_body(self, ctx: Context, chunk: bytes, end: bool) -> object:
        return Reply(200)  # not allowed on a response: a failure

    def on_websocket_message(self, ctx: Context, message: WsMessage) -> object:
        raise RuntimeError("odd")


def ctx() -> Context:
    return Context("127.0.0.1", "http", "web")


def chains(*plugins: Plugin) -> Chains:
    return Chains([(type(p).__name__.lower(), p) for p in plugins])


def test_chains_hold_only_implemented_phases_in_their_order() -> None:
    c = chains(Upper(None), Hold(None), Plugin(None))
    assert [n for n, _ in c.request_body] == ["upper", "hold"]
    assert [n for n, _ in c.response_body] == ["upper"]
    assert [n for n, _ in c.ws_up] == ["upper", "hold"]
    assert [n for n, _ in c.ws_down] == ["hold", "upper"]
    assert (c.request_buffer, c.response_buffer) == (100, 0)
    assert not chains(Plugin(None))
    flow = Flow(chains(Hold(None)), chains(Upper(None)))
    assert [n for n, _ in flow.request_body] == ["hold", "upper"]
    assert [n for n, _ in flow.ws_down] == ["upper", "hold"]
    assert flow.request_buffer == 100
    assert not Flow(chains(Plugin(None)), None)


def test_run_body_passes_each_result_on_and_stops_on_empty() -> None:
    c = ctx()
    phase = chains(Upper(None), Hold(None)).request_body
    assert run_body(phase, c, b"abc", False, request=True) == b""
    assert c.vars["seen"] == [(b"abc", False)]
    # Hold gave nothing: later plugins are not called with an empty non-final piece.
    phase = chains(Hold(None), Upper(None)).request_body
    c = ctx()
    assert run_body(phase, c, b"ab", False, request=True) == b""
    assert "seen" not in c.vars
    assert run_body(phase, c, b"cd", True, request=True) == b"DCBA"


@pytest.mark.parametrize(("chunk", "status"), [(b"reply", 413), (b"raise", 500), (b"none", 500)])
def test_run_body_answers_and_fails_closed(chunk: bytes, status: int) -> None:
    with pytest.raises(PluginReply) as caught:
        run_body(chains(Odd(None)).request_body, ctx(), chunk, False, request=True)
    assert caught.value.reply.status == status


def test_a_reply_from_a_response_body_phase_is_a_failure() -> None:
    with pytest.raises(PluginReply) as caught:
        run_body(chains(Odd(None)).response_body, ctx(), b"x", True, request=False)
    assert caught.value.reply.status == 500


def test_run_message_replaces_drops_and_fails() -> None:
    phase = chains(Upper(None), Hold(None)).ws_up
    out = run_message(phase, ctx(), WsMessage("hi", True))
    assert out is not None and (out.data, out.from_client) == ("hi+upper+hold", True)
    binary = WsMessage(b"\x00", False)
    assert run_message(chains(Upper(None)).ws_down, ctx(), binary) is binary
    assert run_message(chains(Hold(None)).ws_up, ctx(), WsMessage("drop", True)) is None
    with pytest.raises(MessageFailed):
        run_message(chains(Odd(None)).ws_up, ctx(), WsMessage("x", True))


class Reads:
    """A Peer whose reads return the given pieces, then b"" (its end)."""

    upstream = True
    name = "s1"
    responding = False

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)
        self.sent: list[bytes] = []

    async def recv(self, size: int = 65536) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    async def send_all(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def touch(self) -> None:
        pass

    def arm(self, timeout: float, phase: str) -> None:
        pass

    def disarm(self) -> None:
        pass

    def wake(self) -> None:
        pass


def run_pass(
    plugin: Plugin,
    framing: Framing,
    length: int | None,
    first: bytes,
    pieces: Sequence[bytes],
    chunked_out: bool = False,
    request: bool = True,
) -> tuple[BodyPass, bytes, Reads, ResponseHead]:
    c = chains(plugin)
    phase = c.request_body if request else c.response_body
    buffer = c.request_buffer if request else c.response_buffer
    passing = BodyPass(phase, ctx(), buffer, framing, length, request)
    src, dst = Reads(pieces), Reads(())
    head = ResponseHead(status=200, framing=framing, content_length=length, raw=b"raw")

    async def main() -> bytes:
        out = await passing.start(src, first)
        passing.adapt(head)
        await dst.send_all(passing.frame(out, chunked_out))
        await passing.pump(src, dst, chunked_out)
        return out

    return passing, trio.run(main), dst, head


def test_a_body_within_the_buffer_is_one_call_and_gets_its_new_length() -> None:
    passing, out, dst, head = run_pass(
        Hold(None), Framing.LENGTH, 10, b"abc", [b"defghij", b"NEXT"]
    )
    assert out == b"jihgfedcba" and passing.ended and passing.leftover == b""
    assert (head.framing, head.content_length, head.raw) == (Framing.LENGTH, 10, b"raw")
    passing, out, _, head = run_pass(Upper(None), Framing.LENGTH, 4, b"abcdGET /", [])
    assert (out, passing.leftover) == (b"ABCD", b"GET /")  # a pipelined request follows
    passing, _, dst, head = run_pass(
        Upper(None), Framing.CLOSE, None, b"", [b"ab", b""], request=False
    )
    assert b"".join(dst.sent) == b"ab!"


def test_a_longer_body_streams_and_keeps_its_declared_length() -> None:
    pieces = [b"x" * 60, b"y" * 60, b"z" * 30]
    _passing, out, dst, head = run_pass(Upper(None), Framing.LENGTH, 150, b"", pieces)
    assert len(out) == 120 and head.content_length == 150 and head.raw == b"raw"
    assert b"".join(dst.sent) == b"X" * 60 + b"Y" * 60 + b"Z" * 30


def test_a_streamed_length_change_is_refused() -> None:
    pieces = [b"a" * 200]
    with pytest.raises(ProtocolError) as caught:
        run_pass(Upper(None), Framing.LENGTH, 300, b"", [*pieces, b"b" * 100], request=False)
    assert caught.value.status == 500 and "length" in str(caught.value)


def test_a_chunked_body_is_reframed_with_its_trailers() -> None:
    wire = [b"3\r\nabc\r\n", b"2\r\nde\r\n0\r\nx-sum: 5\r\n\r\nNEXT"]
    passing, _out, dst, head = run_pass(Upper(None), Framing.CHUNKED, None, b"", wire, True)
    assert head.framing is Framing.CHUNKED and passing.leftover == b"NEXT"
    assert b"".join(dst.sent) == b"5\r\nABCDE\r\n0\r\nx-sum: 5\r\n\r\n"


def test_a_truncated_or_oversized_body_is_an_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        run_pass(Upper(None), Framing.LENGTH, 300, b"abc", [b"def"])
    assert caught.value.status == 502  # (the Reads peer is a backend)
    passing = BodyPass((), ctx(), 0, Framing.CHUNKED, None, True, limit=4)
    with pytest.raises(ProtocolError) as caught:
        trio.run(passing.start, Reads([]), b"5\r\nabcde\r\n")
    assert caught.value.status == 413
