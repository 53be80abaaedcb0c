"""The PROXY protocol headers (l4/proxyproto.py), built and parsed, without sockets."""

from __future__ import annotations

import struct

import pytest

from trilb.l4.proxyproto import (
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyInfo,
    build_v1,
    build_v2,
    parse,
)


def test_v1_round_trip_both_families() -> None:
    line = build_v1(("192.0.2.7", 56324), ("10.0.0.1", 443))
    assert line == b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"
    assert parse(line + b"GET / HTTP/1.1\r\n") == (
        ProxyInfo(1, ("192.0.2.7", 56324), ("10.0.0.1", 443)), len(line))  # fmt: skip
    six = build_v1(("2001:db8::1", 1), ("::1", 2))
    assert six == b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
    assert parse(six) == (ProxyInfo(1, ("2001:db8::1", 1), ("::1", 2)), len(six))
    mixed = build_v1(("127.0.0.1", 5), ("::1", 6))  # an IPv4 client of an IPv6 listener
    assert mixed == b"PROXY TCP6 ::ffff:7f00:1 ::1 5 6\r\n"


def test_v2_round_trip_both_families() -> None:
    header = build_v2(("192.0.2.7", 56324), ("10.0.0.1", 443))
    assert header[:12] == V2_SIGNATURE and header[12:14] == b"\x21\x11" and len(header) == 28
    assert parse(header + b"rest") == (
        ProxyInfo(2, ("192.0.2.7", 56324), ("10.0.0.1", 443)), 28)  # fmt: skip
    six = build_v2(("2001:db8::1", 1), ("::1", 2), "udp")
    assert six[13] == 0x22 and len(six) == 52
    assert parse(six) == (ProxyInfo(2, ("2001:db8::1", 1), ("::1", 2)), 52)


def test_headers_arriving_in_pieces_need_more() -> None:
    for header in (build_v1(("1.2.3.4", 1), ("5.6.7.8", 2)), build_v2(("1.2.3.4", 1), ("::1", 2))):
        for cut in range(1, len(header)):
            assert parse(header[:cut]) is None
        assert parse(header) is not None


def test_local_unknown_and_tlvs() -> None:
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse(local) == (ProxyInfo(2), 16)
    tlv = b"\x01\x00\x02h2"  # ALPN, skipped
    body = bytes([127, 0, 0, 9, 127, 0, 0, 1]) + struct.pack("!HH", 7, 8) + tlv
    with_tlv = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(body)) + body
    assert parse(with_tlv) == (ProxyInfo(2, ("127.0.0.9", 7), ("127.0.0.1", 8)), len(with_tlv))
    assert parse(b"PROXY UNKNOWN\r\n") == (ProxyInfo(1), 15)
    assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")[0] == ProxyInfo(1)  # type: ignore[index]


BAD = [
    pytest.param(b"GET / HTTP/1.1\r\n", "no PROXY protocol header", id="no-header"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "malformed", id="v1-bare-lf"),
    pytest.param(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "malformed", id="v1-protocol"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed", id="v1-fields"),
    pytest.param(b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "bad address", id="v1-address"),
    pytest.param(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad address", id="v1-family"),
    pytest.param(b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n", "bad address", id="v1-nul"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad port", id="v1-zero"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "bad port", id="v1-port"),
    pytest.param(b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "malformed", id="v1-spaces"),
    pytest.param(b"PROXY TCP4 " + b"1" * 120, "longer than 107", id="v1-long"),
    pytest.param(b"PROXX", "malformed", id="v1-garbage"),
    pytest.param(b"PROXY \xff\xfe\r\n", "not ASCII", id="v1-binary"),
    pytest.param(b"\r\n\r\n\x00\r\nQUIX", "signature", id="v2-signature"),
    pytest.param(V2_SIGNATURE + b"\x31\x11\x00\x0c", "version/command", id="v2-version"),
    pytest.param(V2_SIGNATURE + b"\x22\x11\x00\x0c", "version/command", id="v2-command"),
    pytest.param(V2_SIGNATURE + b"\x21\x41\x00\x0c", "family", id="v2-family"),
    pytest.param(V2_SIGNATURE + b"\x21\x11\x00\x08", "bad length", id="v2-short"),
    pytest.param(V2_SIGNATURE + b"\x21\x11\xff\xff", "bad length", id="v2-huge"),
]


@pytest.mark.parametrize(("data", "fragment"), BAD)
def test_malformed_headers_are_refused(data: bytes, fragment: str) -> None:
    with pytest.raises(ProxyHeaderError, match=fragment):
        parse(data)


def test_a_truncated_header_is_never_complete() -> None:
    assert parse(build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))[:27]) is None
    assert parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2") is None  # (the caller's timeout ends it)
