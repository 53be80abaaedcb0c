"""The PROXY protocol (HAProxy's spec, versions 1 and 2), sans I/O: headers built for a
backend, headers parsed from a balancer in front of trilb.

Parsing is strict, as the spec asks of a receiver: a v1 line is "PROXY", a protocol
(TCP4, TCP6 or UNKNOWN), two addresses of that family and two ports in decimal without
leading zeros, within 107 bytes ending in CRLF; a v2 header has the 12-byte signature,
version 2, a command (LOCAL or PROXY), a known family and protocol, and a length that
holds the addresses (TLVs after them are skipped). Anything else is a ProxyHeaderError,
and the connection is closed without a byte of it forwarded. A LOCAL command (a health
check of the balancer in front) or UNKNOWN protocol carries no address: the connection's
own is used.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from trilb.errors import TrilbError

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the spec's longest line, CRLF included
# The most bytes of TLVs accepted after a v2 header's addresses: the spec allows 64 KiB,
# real balancers send a few dozen (ALPN, authority, a unique id, SSL details).
V2_MAX_EXTRA = 4096
_V2_COMMANDS = {0x20: "LOCAL", 0x21: "PROXY"}
# family/protocol byte -> (address family, transport, address block length)
_V2_FAMILIES = {
    0x00: (None, "", 0),
    0x11: (socket.AF_INET, "tcp", 12),
    0x12: (socket.AF_INET, "udp", 12),
    0x21: (socket.AF_INET6, "tcp", 36),
    0x22: (socket.AF_INET6, "udp", 36),
    0x31: (socket.AF_UNIX, "tcp", 216),
    0x32: (socket.AF_UNIX, "udp", 216),
}

Address = tuple[str, int]


class ProxyHeaderError(TrilbError):
    """A PROXY protocol header is missing, malformed or unsupported."""


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """What a header said: the original client (``source``) and the address it
    connected to (``destination``); both None when it carried none (LOCAL, UNKNOWN)."""

    version: int
    source: Address | None = None
    destination: Address | None = None


def build_v1(source: Address, destination: Address) -> bytes:
    """A v1 header line for a TCP connection from ``source`` to ``destination``."""
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    if src.version != dst.version:  # (an IPv4 client on an IPv6 listener: mapped)
        src, dst = _as_v6(src), _as_v6(dst)
    proto = b"TCP4" if src.version == 4 else b"TCP6"
    return b"PROXY %s %s %s %d %d\r\n" % (proto, str(src).encode(), str(dst).encode(),
                                          source[1], destination[1])  # fmt: skip


def build_v2(source: Address, destination: Address, transport: str = "tcp") -> bytes:
    """A v2 header (command PROXY) for a connection from ``source`` to ``destination``."""
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        src, dst = _as_v6(src), _as_v6(dst)
    family = (0x10 if src.version == 4 else 0x20) | (0x02 if transport == "udp" else 0x01)
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(body)) + body


def _as_v6(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(addr, ipaddress.IPv6Address):
        return addr
    return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + addr.packed)


def parse(data: bytes) -> tuple[ProxyInfo, int] | None:
    """The header at the start of ``data``: (what it said, its length), or None when
    ``data`` is a valid start of one that needs more bytes.

    Raises:
      ProxyHeaderError: ``data`` cannot start a valid header.
    """
    if not data:
        return None
    if data[0] == 0x0D:  # (the v2 signature starts with CR; a v1 line with "P")
        return _parse_v2(data)
    if data[0] == 0x50:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header (the connection must start with one)")


def _parse_v1(data: bytes) -> tuple[ProxyInfo, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if not b"PROXY ".startswith(data[:6]) or b"\n" in data[:V1_MAX]:
            raise ProxyHeaderError("malformed PROXY v1 header")
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 header longer than {V1_MAX} bytes")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    parts = line.split(" ")
    if len(parts) < 2 or parts[0] != "PROXY":
        raise ProxyHeaderError("malformed PROXY v1 header")
    if parts[1] == "UNKNOWN":  # (the rest of the line, whatever it is, is ignored)
        return ProxyInfo(1), end + 2
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 header: {line[:60]!r}")
    family = socket.AF_INET if parts[1] == "TCP4" else socket.AF_INET6
    src = _v1_address(parts[2], parts[4], family)
    dst = _v1_address(parts[3], parts[5], family)
    return ProxyInfo(1, src, dst), end + 2


def _v1_address(host: str, port: str, family: int) -> Address:
    try:
        socket.inet_pton(family, host)
    except (OSError, ValueError):  # (ValueError: a NUL inside)
        raise ProxyHeaderError(f"PROXY v1 header: bad address {host[:46]!r}") from None
    if not port.isdigit() or (port[0] == "0" and port != "0") or int(port) > 65535:
        raise ProxyHeaderError(f"PROXY v1 header: bad port {port[:8]!r}")
    return host, int(port)


def _parse_v2(data: bytes) -> tuple[ProxyInfo, int] | None:
    head = data[:16]
    if not V2_SIGNATURE.startswith(head[:12]):
        raise ProxyHeaderError("malformed PROXY v2 signature")
    if len(head) < 16:
        return None
    command = _V2_COMMANDS.get(head[12])
    if command is None:
        raise ProxyHeaderError(f"PROXY v2 header: unknown version/command 0x{head[12]:02x}")
    known = _V2_FAMILIES.get(head[13])
    if known is None:
        raise ProxyHeaderError(f"PROXY v2 header: unknown family/protocol 0x{head[13]:02x}")
    family, _, needed = known
    (length,) = struct.unpack_from("!H", head, 14)
    if length < needed or length > needed + V2_MAX_EXTRA:
        raise ProxyHeaderError(f"PROXY v2 header: bad length {length}")
    total = 16 + length
    if len(data) < total:
        return None
    if command == "LOCAL" or family is None or family == socket.AF_UNIX:
        return ProxyInfo(2), total
    size = 4 if family == socket.AF_INET else 16
    body = data[16:total]
    src = socket.inet_ntop(family, body[:size])
    dst = socket.inet_ntop(family, body[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", body, 2 * size)
    return ProxyInfo(2, (src, sport), (dst, dport)), total
