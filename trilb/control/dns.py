"""DNS stub-resolver messages, sans I/O: the A or AAAA query for a backend given as
``dns:NAME:PORT``, and the addresses its answer holds.

The control process sends the query to its configured resolvers over UDP, and again over
TCP (``tcp_frame``/``tcp_unframe``) when the answer comes back truncated; that I/O, the
retries and what an empty answer does to a backend's servers are its business, not this
module's. Resolvers are recursive (the query asks for recursion), so this module neither
follows referrals nor caches; it trusts one answer's chain of CNAMEs and nothing beyond.

Parsing is strict, since the answer decides where traffic goes: the id, the QR bit, the
opcode and the echoed question must match; every section must parse to the last byte;
compression pointers must point strictly backwards (dnspython's rule, which bounds every
name by the message's length); a malformed answer is a DnsError saying what was wrong,
never an IndexError. NXDOMAIN and NODATA are not errors: they are an Answer without
addresses, whose ttl says how long the resolver may remember that (RFC 2308).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import NamedTuple

from trilb.errors import TrilbError

A = 1
AAAA = 28
_CNAME = 5
_SOA = 6
_IN = 1
_SIZES = {A: 4, AAAA: 16}  # rdata length of each address type
# Real chains have a link or two (an ExternalName service, a CDN alias); a longer one is a
# misconfiguration, and the bound keeps a hostile answer cheap.
MAX_CNAME_CHAIN = 8
# The flags of a query: recursion desired, everything else zero. No EDNS: 512 bytes hold
# about 29 A or 16 AAAA records, and a larger set comes back truncated and goes over TCP.
_RD = 0x0100
_QR = 0x8000
_TC = 0x0200
_RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength (after the owner name)
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")  # underscore: SRV-style names (_http._tcp)

_Name = tuple[bytes, ...]  # lowercased labels: DNS compares names ASCII case-insensitively


class DnsError(TrilbError):
    """A DNS answer is malformed or unusable; the message says what, for the log."""


class Truncated(DnsError):
    """The answer did not fit in a UDP datagram (TC bit): ask again over TCP."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The addresses a name has (text, sorted numerically, unique; none for NXDOMAIN or
    NODATA) and for how many seconds that holds (the least TTL of the records used)."""

    addresses: tuple[str, ...]
    ttl: int


class _Record(NamedTuple):
    name: _Name
    rtype: int
    rclass: int
    ttl: int
    start: int  # of the rdata, in the message
    end: int


def build_query(name: str, qtype: int, query_id: int) -> bytes:
    """A recursive query for ``name``'s A or AAAA records (class IN).

    Raises:
      ValueError: ``name`` is not an ASCII host name (IDNA is out of scope), ``qtype`` is
        neither A nor AAAA, or ``query_id`` does not fit in 16 bits.
    """
    labels = _labels(name)
    _check_qtype(qtype)
    if not 0 <= query_id <= 0xFFFF:
        raise ValueError(f"dns query id {query_id} does not fit in 16 bits")
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    return _HEADER.pack(query_id, _RD, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, _IN)


def parse_response(data: bytes, query_id: int, name: str, qtype: int) -> Answer:
    """The answer in ``data`` to the query ``build_query(name, qtype, query_id)``.

    CNAMEs in the answer section are followed from ``name``; the records of the asked type
    owned by the chain's last name are the answer. A chain that ends at a name without
    such records is NODATA: an empty Answer.

    Raises:
      Truncated: the TC bit is set; the caller asks again over TCP.
      DnsError: the message is malformed, answers another query, reports an error other
        than NXDOMAIN, or its CNAMEs loop or chain more than MAX_CNAME_CHAIN times.
      ValueError: ``name`` or ``qtype`` would not have made a query.
    """
    data = bytes(data)  # (a bytearray's slices are unhashable, and would be compared as keys)
    want = tuple(label.lower() for label in _labels(name))
    _check_qtype(qtype)
    if len(data) < _HEADER.size:
        raise DnsError(f"dns response of {len(data)} bytes is shorter than a header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if ident != query_id:
        raise DnsError(f"dns response id {ident} does not match query id {query_id}")
    if not flags & _QR:
        raise DnsError("dns message is a query, not a response")
    if (opcode := flags >> 11 & 0xF) != 0:
        raise DnsError(f"dns response has opcode {opcode}, not 0 (query)")
    if flags & _TC:
        raise Truncated(f"dns response for {name} is truncated")
    rcode = flags & 0xF
    if rcode not in (0, 3):
        reason = _RCODES.get(rcode, "error")
        raise DnsError(f"dns server answered {reason} for {name} (rcode {rcode})")
    if qdcount != 1:
        raise DnsError(f"dns response has {qdcount} questions, not 1")
    qname, offset = _read_name(data, _HEADER.size)
    if offset + 4 > len(data):
        raise DnsError("dns response ends inside its question")
    echoed = struct.unpack_from("!HH", data, offset)
    if qname != want or echoed != (qtype, _IN):
        raise DnsError(f"dns response answers another question than {name} type {qtype}")
    answers, offset = _read_records(data, offset + 4, ancount)
    authority, offset = _read_records(data, offset, nscount)
    _, offset = _read_records(data, offset, arcount)
    if offset != len(data):
        raise DnsError(f"dns response has {len(data) - offset} bytes after its last record")
    if rcode == 3:
        return Answer((), _negative_ttl(data, authority))
    target, ttls = _follow_cnames(data, answers, want)
    size = _SIZES[qtype]
    packed: set[bytes] = set()
    for rr in answers:
        if rr.rclass == _IN and rr.rtype == qtype and rr.name == target:
            if rr.end - rr.start != size:
                raise DnsError(f"dns record of type {qtype} has {rr.end - rr.start} bytes")
            packed.add(data[rr.start : rr.end])
            ttls.append(rr.ttl)
    if not packed:
        return Answer((), min([*ttls, _negative_ttl(data, authority)]))
    # (sorted as numbers: 10.0.0.9 before 10.0.0.10, so the order is stable and plain)
    addresses = tuple(str(ipaddress.ip_address(raw)) for raw in sorted(packed))
    return Answer(addresses, min(ttls))


def tcp_frame(query: bytes) -> bytes:
    """``query`` with the two-byte length prefix DNS over TCP needs (RFC 1035 4.2.2)."""
    if len(query) > 0xFFFF:
        raise ValueError(f"dns message of {len(query)} bytes is too long for TCP framing")
    return struct.pack("!H", len(query)) + query


def tcp_unframe(data: bytes) -> bytes | None:
    """The message framed at the start of ``data``, or None while it is incomplete.

    Bytes after the frame are ignored: one query goes over each connection, so nothing
    else is awaited on it.
    """
    if len(data) < 2:
        return None
    end = 2 + int.from_bytes(data[:2], "big")
    return data[2:end] if len(data) >= end else None


def _labels(name: str) -> tuple[bytes, ...]:
    """``name``'s labels as given (case kept, the trailing dot dropped), checked."""
    text = name[:-1] if name.endswith(".") else name
    if not text.isascii():
        raise ValueError(f"dns name {name!r} is not ASCII (IDNA names are not supported)")
    if len(text) > 253:
        raise ValueError(f"dns name of {len(text)} characters is longer than 253")
    labels = text.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"dns name {name!r} has a bad label {label!r} (1 to 63 letters, digits, "
                "hyphens or underscores)"
            )
    return tuple(label.encode("ascii") for label in labels)


def _check_qtype(qtype: int) -> None:
    if qtype not in _SIZES:
        raise ValueError(f"dns query type {qtype} is neither A (1) nor AAAA (28)")


def _read_name(data: bytes, offset: int) -> tuple[_Name, int]:
    """The name at ``offset`` and the offset after it (after its first pointer)."""
    labels: list[bytes] = []
    size = 1  # bytes of the name uncompressed, its final zero included
    after = -1
    lowest = offset  # each pointer must go below the last: no loop, no forward reference
    pos = offset
    while True:
        if pos >= len(data):
            raise DnsError("dns name runs past the end of the message")
        length = data[pos]
        if length >= 0xC0:
            if pos + 1 >= len(data):
                raise DnsError("dns name runs past the end of the message")
            target = (length & 0x3F) << 8 | data[pos + 1]
            if target >= lowest:
                raise DnsError(f"dns compression pointer at {pos} to {target} does not go back")
            if after < 0:
                after = pos + 2
            lowest = pos = target
            continue
        if length > 63:  # (0x40 and 0x80: the extended and reserved label types)
            raise DnsError(f"dns label type 0x{length:02x} at {pos} is not supported")
        pos += 1
        if length == 0:
            return tuple(labels), (after if after >= 0 else pos)
        if pos + length > len(data):
            raise DnsError("dns name runs past the end of the message")
        size += length + 1
        if size > 255:
            raise DnsError("dns name is longer than 255 bytes")
        labels.append(data[pos : pos + length].lower())
        pos += length


def _read_records(data: bytes, offset: int, count: int) -> tuple[list[_Record], int]:
    records = []
    for _ in range(count):  # (each record takes at least 11 bytes: a bad count fails fast)
        name, offset = _read_name(data, offset)
        if offset + _RR.size > len(data):
            raise DnsError("dns message ends inside a record")
        rtype, rclass, ttl, rdlength = _RR.unpack_from(data, offset)
        start = offset + _RR.size
        offset = start + rdlength
        if offset > len(data):
            raise DnsError("dns message ends inside a record's data")
        # RFC 2181 8: a TTL with the top bit set is read as zero.
        records.append(_Record(name, rtype, rclass, 0 if ttl >> 31 else ttl, start, offset))
    return records, offset


def _follow_cnames(data: bytes, answers: list[_Record], name: _Name) -> tuple[_Name, list[int]]:
    """The last name of the CNAME chain from ``name``, and the TTLs of its links."""
    cnames: dict[_Name, tuple[_Name, int]] = {}
    for rr in answers:
        if rr.rclass == _IN and rr.rtype == _CNAME:
            if rr.name in cnames:
                raise DnsError(f"dns response has several CNAMEs for {_text(rr.name)}")
            target, end = _read_name(data, rr.start)
            if end != rr.end:
                raise DnsError(f"dns CNAME of {_text(rr.name)} does not fill its record")
            cnames[rr.name] = (target, rr.ttl)
    seen = {name}
    ttls: list[int] = []
    while name in cnames:
        name, ttl = cnames[name]
        ttls.append(ttl)
        if name in seen:
            raise DnsError(f"dns CNAME chain loops at {_text(name)}")
        if len(ttls) > MAX_CNAME_CHAIN:
            raise DnsError(f"dns CNAME chain is longer than {MAX_CNAME_CHAIN}")
        seen.add(name)
    return name, ttls


def _negative_ttl(data: bytes, authority: list[_Record]) -> int:
    """How long "no such records" holds: RFC 2308 5, the lesser of the SOA's own TTL
    and its MINIMUM field; 0 without an SOA (nothing says it may be remembered)."""
    for rr in authority:
        if rr.rclass == _IN and rr.rtype == _SOA:
            _, offset = _read_name(data, rr.start)  # MNAME
            _, offset = _read_name(data, offset)  # RNAME
            if offset + 20 != rr.end:
                raise DnsError("dns SOA record has a bad length")
            minimum = int.from_bytes(data[offset + 16 : offset + 20], "big")
            return min(rr.ttl, minimum)
    return 0


def _text(name: _Name) -> str:
    return ".".join(label.decode("ascii", "replace") for label in name) or "."
