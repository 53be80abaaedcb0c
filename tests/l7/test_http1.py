"""HTTP/1.1 parsing and serializing: the corpus of tests/corpus, then unit and property tests."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trilb.errors import ProtocolError
from trilb.l7.http1 import (
    ChunkedReader,
    RequestParser,
    ResponseParser,
    serialize_request,
    serialize_response,
)
from trilb.messages import Framing, Headers, RequestHead, ResponseHead

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)")
SIMPLE_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}
# Whole, one byte at a time, and uneven pieces: every case must give the same outcome.
STEPS = (0, 1, 7)


def unescape(text: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        code = match[1]
        if code.startswith(b"x") and len(code) == 3:
            return bytes([int(code[1:], 16)])
        return SIMPLE_ESCAPES[code]  # KeyError: an escape the corpus format does not have

    return ESCAPE.sub(one, text)


@dataclass
class Case:
    side: str = "request"
    method: bytes = b"GET"
    limits: dict[str, int] = field(default_factory=dict)
    expects: list[bytes] = field(default_factory=list)
    wire: bytes = b""


def load(path: Path) -> Case:
    case = Case()
    lines = path.read_bytes().splitlines()
    while lines and lines[0].startswith(b"#"):
        key, _, value = lines.pop(0)[1:].strip().partition(b":")
        value = value.strip()
        if key == b"expect":
            case.expects.append(value)
        elif key == b"side":
            case.side = value.decode()
        elif key == b"method":
            case.method = value
        elif key == b"limits":
            for item in value.split():
                name, _, number = item.partition(b"=")
                case.limits[name.decode()] = int(number)
    case.wire = unescape(b"".join(lines))
    assert case.expects, f"{path.name}: no '# expect:' line"
    return case


def read_body(
    head: RequestHead | ResponseHead, chunks: deque[bytes], side: str
) -> dict[str, object]:
    """Consume the body from ``chunks`` the way the proxy relays it; None if it is cut short."""
    body = b""
    trailers = Headers()
    if head.framing is Framing.LENGTH:
        assert head.content_length is not None
        while len(body) < head.content_length and chunks:
            body += chunks.popleft()
        if len(body) > head.content_length:
            chunks.appendleft(body[head.content_length :])
            body = body[: head.content_length]
    elif head.framing is Framing.CHUNKED:
        reader = ChunkedReader(response=side == "response")
        while not reader.done and chunks:
            body += reader.feed(chunks.popleft())
        if reader.leftover:
            chunks.appendleft(reader.leftover)
        trailers = reader.trailers
    elif head.framing is Framing.CLOSE:
        body = b"".join(chunks)
        chunks.clear()
    return {"body": body, "trailers": trailers}


def run(case: Case, step: int) -> list[object]:
    """Parse ``case.wire`` fed in ``step``-byte pieces; one outcome per message."""
    parser: RequestParser | ResponseParser
    if case.side == "request":
        parser = RequestParser(**case.limits)
    else:
        parser = ResponseParser(case.method, **case.limits)
    wire = case.wire
    chunks = deque([wire] if not step else [wire[i : i + step] for i in range(0, len(wire), step)])
    outcomes: list[object] = []
    try:
        while chunks:
            head = None
            while head is None and chunks:
                head = parser.feed(chunks.popleft())
            if head is None:
                outcomes.append("incomplete")
                break
            if parser.leftover:
                chunks.appendleft(parser.leftover)
            outcomes.append((head, read_body(head, chunks, case.side)))
    except ProtocolError as exc:
        outcomes.append(exc)
    return outcomes


def observed(head: RequestHead | ResponseHead, extra: dict[str, object], key: str) -> bytes:
    value: object
    if key.startswith("header."):
        value = head.headers.get(key[7:].encode())
    elif key.startswith("trailer."):
        trailers = extra["trailers"]
        assert isinstance(trailers, Headers)
        value = trailers.get(key[8:].encode())
    elif key == "headers":
        value = len(head.headers)
    elif key == "trailers":
        value = len(extra["trailers"])  # type: ignore[arg-type]  # always a Headers
    elif key == "body":
        value = extra["body"]
    elif key == "length":
        value = head.content_length
    elif key == "framing":
        value = head.framing.value
    else:
        value = getattr(head, key)
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool) or value is None:
        return str(value).lower().encode()
    return str(value).encode()


def check(outcome: object, expect: bytes, where: str) -> None:
    word, _, rest = expect.partition(b" ")
    if word == b"incomplete":
        assert outcome == "incomplete", where
    elif word == b"ok":
        assert isinstance(outcome, tuple), f"{where}: expected a head, got {outcome!r}"
        head, extra = outcome
        for item in rest.split():
            key, _, want = item.partition(b"=")
            got = observed(head, extra, key.decode())
            assert got == unescape(want), f"{where}: {key.decode()} is {got!r}"
    else:
        assert isinstance(outcome, ProtocolError), f"{where}: expected {expect!r}, got {outcome!r}"
        assert outcome.status == int(word), f"{where}: {outcome.status} {outcome}"
        needle = rest.partition(b"~ ")[2].decode()
        assert needle in str(outcome), f"{where}: message {str(outcome)!r}"


@pytest.mark.parametrize("step", STEPS, ids=["whole", "bytewise", "step7"])
@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.http")), ids=lambda p: p.stem)
def test_corpus(path: Path, step: int) -> None:
    case = load(path)
    outcomes = run(case, step)
    assert len(outcomes) == len(case.expects), f"{path.name}: outcomes {outcomes!r}"
    for n, (outcome, expect) in enumerate(zip(outcomes, case.expects, strict=True)):
        check(outcome, expect, f"{path.name} message {n + 1}")


def test_corpus_is_large_enough() -> None:
    assert len(list(CORPUS.glob("*.http"))) >= 40


def parse_response(raw: bytes, method: bytes = b"GET") -> ResponseHead:
    head = ResponseParser(method).feed(raw)
    assert head is not None
    return head


def test_response_to_head_has_no_body() -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"HEAD")
    assert (head.framing, head.content_length, head.keep_alive) == (Framing.NONE, 10, True)


def test_response_interim_then_final_on_one_parser() -> None:
    parser = ResponseParser(b"POST")
    interim = parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-")
    assert interim is not None and interim.status == 100 and interim.framing is Framing.NONE
    assert parser.feed(parser.leftover) is None
    final = parser.feed(b"Length: 0\r\n\r\n")
    assert final is not None and final.status == 201 and final.reason == b"Created"


@pytest.mark.parametrize("status", [204, 304])
def test_response_without_body(status: int) -> None:
    head = parse_response(b"HTTP/1.1 %d X\r\nContent-Length: 3\r\n\r\n" % status)
    assert head.framing is Framing.NONE and head.keep_alive


def test_response_close_delimited() -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    assert head.framing is Framing.CLOSE and not head.keep_alive


def test_response_chunked_with_trailers() -> None:
    parser = ResponseParser()
    head = parser.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n"
    )
    assert head is not None and head.framing is Framing.CHUNKED
    reader = ChunkedReader(response=True)
    assert reader.feed(parser.leftover) == b"3\r\nabc\r\n0\r\nX-Sum: 1\r\n"
    assert not reader.done
    assert reader.feed(b"\r\nHTTP/1.1") == b"\r\n"
    assert reader.done and reader.leftover == b"HTTP/1.1"
    assert reader.trailers == Headers([(b"x-sum", b"1")])


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 999 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n  b\r\n\r\n",
    ],
)
def test_response_bad_framing_is_502(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        ResponseParser().feed(raw)
    assert info.value.status == 502


def test_chunked_reader_holds_back_an_unchecked_size_line() -> None:
    reader = ChunkedReader()
    assert reader.feed(b"5") == b""
    assert reader.feed(b";a=b") == b""
    assert reader.feed(b"\r\nhel") == b"5;a=b\r\nhel"
    with pytest.raises(ProtocolError) as info:
        reader.feed(b"lo\r\nZ\r\n")
    assert info.value.status == 400


def test_chunked_reader_limits_trailers() -> None:
    reader = ChunkedReader(max_trailers=1)
    with pytest.raises(ProtocolError) as info:
        reader.feed(b"0\r\nA: 1\r\nB: 2\r\n\r\n")
    assert info.value.status == 431


def test_keep_alive_parser_reused_after_each_framing() -> None:
    parser = RequestParser()
    wire = [
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /d HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        b"GET /e HTTP/1.1\r\nHost: h\r\n\r\n",
    ]
    targets = []
    for raw in wire:  # bodies are relayed without the parser, as the proxy does
        head = parser.feed(raw)
        assert head is not None and parser.leftover == b""
        targets.append(head.target)
    assert targets == [b"/a", b"/b", b"/c", b"/d", b"/e"]


REQUEST = (
    b"POST /x?y=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n"
    b"X-Tab: a\tb\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"
)


def test_serialize_request_round_trip() -> None:
    head = RequestParser().feed(REQUEST)
    assert head is not None
    wire = serialize_request(head)
    assert wire == (
        b"POST /x?y=1 HTTP/1.1\r\nhost: example.com\r\ncontent-length: 3\r\n"
        b"x-tab: a\tb\r\ncookie: a=1\r\ncookie: b=2\r\n\r\n"
    )
    again = RequestParser().feed(wire)
    assert again == head


def test_serialize_response_round_trip() -> None:
    raw = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nvary: accept\r\n\r\n"
    head = parse_response(raw)
    assert serialize_response(head) == raw
    assert parse_response(serialize_response(head)) == head


@pytest.mark.parametrize(
    "headers",
    [[(b"x", b"a\r\nInjected: 1")], [(b"x\r\nY", b"1")], [(b"x", b"a\rb")], [(b"x", b"a\nb")]],
)
def test_serializers_refuse_cr_or_lf_in_fields(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ProtocolError) as info:
        serialize_request(RequestHead(b"GET", b"/", headers=Headers(headers)))
    assert info.value.status == 500
    with pytest.raises(ProtocolError):
        serialize_response(ResponseHead(200, b"OK", headers=Headers(headers)))


def feed_all(parser: RequestParser | ResponseParser, pieces: list[bytes]) -> None:
    for piece in pieces:
        data = piece
        while parser.feed(data) is not None and parser.leftover:
            data = parser.leftover


@given(st.lists(st.binary(max_size=200), max_size=8))
def test_arbitrary_bytes_raise_only_protocol_error(pieces: list[bytes]) -> None:
    for parser in (RequestParser(), ResponseParser(), ResponseParser(b"HEAD")):
        try:
            feed_all(parser, pieces)
        except ProtocolError:
            pass


VALID = (
    b"POST /p HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: keep-alive\r\nExpect: 100-continue\r\n\r\n"
)


@given(st.integers(0, len(VALID)), st.binary(min_size=1, max_size=4), st.integers(0, 4))
def test_mutated_request_raises_only_protocol_error(at: int, insert: bytes, drop: int) -> None:
    raw = VALID[:at] + insert + VALID[at + drop :]
    try:
        feed_all(RequestParser(), [raw[:at], raw[at:]])
    except ProtocolError:
        pass


@given(st.lists(st.binary(max_size=50), max_size=8), st.booleans())
def test_chunked_reader_forwards_a_prefix_of_its_input(pieces: list[bytes], response: bool) -> None:
    reader = ChunkedReader(response=response)
    out = b""
    try:
        for piece in pieces:
            if reader.done:
                break
            out += reader.feed(piece)
    except ProtocolError:
        return
    sent = b"".join(pieces)
    assert sent.startswith(out)
    if reader.done:
        assert sent.startswith(out + reader.leftover)


TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12)
VALUE = st.text("".join(map(chr, range(0x21, 0x7F))), max_size=20)


@given(st.lists(st.tuples(TOKEN, VALUE), max_size=10))
def test_serialized_fields_parse_back_the_same(fields: list[tuple[str, str]]) -> None:
    items = [(b"host", b"example.com")] + [
        (name.encode(), value.encode())
        for name, value in fields
        if name not in ("host", "content-length", "transfer-encoding", "connection", "expect")
        and name != "upgrade"
    ]
    head = RequestHead(b"GET", b"/", headers=Headers(items))
    again = RequestParser().feed(serialize_request(head))
    assert again is not None and again.headers == head.headers


CHUNKS = st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.sampled_from([b"", b";a=b"])))


@given(CHUNKS, st.lists(st.integers(1, 30), max_size=20), st.binary(max_size=10))
def test_valid_chunked_body_relayed_whole(
    chunks: list[tuple[bytes, bytes]], cuts: list[int], tail: bytes
) -> None:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(data), ext, data) for data, ext in chunks)
    body += b"0\r\nX-T: 1\r\n\r\n"
    wire, pieces, at = body + tail, [], 0
    for cut in cuts:
        pieces.append(wire[at : at + cut])
        at += cut
    pieces.append(wire[at:])
    reader, out, rest = ChunkedReader(), b"", b""
    for n, piece in enumerate(pieces):
        out += reader.feed(piece)
        if reader.done:
            rest = reader.leftover + b"".join(pieces[n + 1 :])
            break
    assert reader.done and out == body and rest == tail
    assert reader.trailers == Headers([(b"x-t", b"1")])


def test_chunked_reader_gives_the_payload_alone_when_asked() -> None:
    body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT"
    whole = ChunkedReader(response=True)
    assert whole.feed_payload(body) == b"Wikipedia"
    assert whole.done and whole.leftover == b"NEXT"
    assert whole.trailers.get(b"x-t") == b"1"
    pieces = ChunkedReader(response=True)
    out = b""
    for i in range(0, len(body), 3):
        out += pieces.feed_payload(body[i : i + 3])
        if pieces.done:
            break
    assert out == b"Wikipedia" and pieces.done
