"""DNS queries and answers (control/dns.py), without sockets: answers are built with dnslib,
an encoder independent of the parser, or by hand where dnslib would not write them."""

from __future__ import annotations

import itertools
import random
import struct

import pytest
from dnslib import AAAA as AAAARecord
from dnslib import (
    CNAME,
    QTYPE,
    RD,
    RR,
    SOA,
    DNSHeader,
    DNSQuestion,
    DNSRecord,
)
from dnslib import A as ARecord

from trilb.control.dns import (
    AAAA,
    MAX_CNAME_CHAIN,
    A,
    Answer,
    DnsError,
    Truncated,
    build_query,
    parse_response,
    tcp_frame,
    tcp_unframe,
)

QID = 0x4242
NAME = "web.default.svc.cluster.local"


def response(
    records: list[RR],
    *,
    name: str = NAME,
    qtype: int = A,
    qid: int = QID,
    rcode: int = 0,
    tc: int = 0,
    authority: tuple[RR, ...] = (),
) -> bytes:
    header = DNSHeader(id=qid, qr=1, rd=1, ra=1, rcode=rcode, tc=tc)
    message = DNSRecord(header, q=DNSQuestion(name, qtype))
    for rr in records:
        message.add_answer(rr)
    for rr in authority:
        message.add_auth(rr)
    return bytes(message.pack())  # (dnslib gives a bytearray)


def a(owner: str, address: str, ttl: int = 300) -> RR:
    return RR(owner, QTYPE.A, ttl=ttl, rdata=ARecord(address))


def cname(owner: str, target: str, ttl: int = 300) -> RR:
    return RR(owner, QTYPE.CNAME, ttl=ttl, rdata=CNAME(target))


def soa(ttl: int, minimum: int, zone: str = "cluster.local") -> RR:
    times = (2024010101, 7200, 3600, 1209600, minimum)
    return RR(zone, QTYPE.SOA, ttl=ttl, rdata=SOA(f"ns.{zone}", f"hostmaster.{zone}", times))


def with_flags(data: bytes, set_bits: int = 0, clear_bits: int = 0) -> bytes:
    (flags,) = struct.unpack_from("!H", data, 2)
    return data[:2] + struct.pack("!H", (flags | set_bits) & ~clear_bits) + data[4:]


def parse(data: bytes, name: str = NAME, qtype: int = A) -> Answer:
    return parse_response(data, QID, name, qtype)


# Valid answers of several shapes, for the prefix and mutation tests.
SAMPLES = {
    "a": response([a(NAME, "10.0.0.2", 30), a(NAME, "10.0.0.1", 20)]),
    "aaaa": response([RR(NAME, QTYPE.AAAA, ttl=40, rdata=AAAARecord("fd00::1"))], qtype=AAAA),
    "cname": response(
        [cname(NAME, "pool.example.net"), a("pool.example.net", "192.0.2.1")],
        authority=(soa(600, 60),),
    ),
    "nxdomain": response([], rcode=3, authority=(soa(900, 30),)),
}


def test_a_records_sorted_unique_least_ttl() -> None:
    data = response(
        [
            a(NAME, "10.0.0.10", 300),
            a(NAME, "10.0.0.9", 60),
            a(NAME, "10.0.0.10", 120),  # the same address twice: once in the answer
            a("other.example.com", "192.0.2.99", 5),  # not ours: neither address nor ttl
        ]
    )
    assert parse(data) == Answer(("10.0.0.9", "10.0.0.10"), 60)  # numeric order


def test_aaaa_records_as_compressed_text() -> None:
    data = response(
        [
            RR(NAME, QTYPE.AAAA, ttl=90, rdata=AAAARecord("fd00::2")),
            RR(NAME, QTYPE.AAAA, ttl=30, rdata=AAAARecord("fd00:0:0:0::1")),
            RR(NAME, QTYPE.AAAA, ttl=60, rdata=AAAARecord("fd00::1")),
            a(NAME, "10.0.0.1", 1),  # another type than asked: ignored
        ],
        qtype=AAAA,
    )
    assert parse(data, qtype=AAAA) == Answer(("fd00::1", "fd00::2"), 30)


def test_records_of_another_class_are_ignored() -> None:
    chaos = RR(NAME, QTYPE.A, rclass=3, ttl=1, rdata=ARecord("10.9.9.9"))
    assert parse(response([chaos, a(NAME, "10.0.0.1")])) == Answer(("10.0.0.1",), 300)


def test_question_name_compares_case_insensitively() -> None:
    data = response([a(NAME.upper(), "10.0.0.1")], name=NAME.upper())
    assert parse(data, name="Web.Default.SVC.cluster.local.") == Answer(("10.0.0.1",), 300)


def test_cname_chain_is_followed_and_its_ttls_count() -> None:
    data = response(
        [
            cname(NAME, "Alias.Example.NET", 50),  # (targets compare case-insensitively)
            cname("alias.example.net", "pool.example.org", 500),
            a("pool.example.org", "192.0.2.2", 400),
            a("pool.example.org", "192.0.2.1", 300),
            a(NAME, "10.0.0.1"),  # beside a CNAME: not valid DNS, and not followed
        ]
    )
    assert parse(data) == Answer(("192.0.2.1", "192.0.2.2"), 50)


def test_cname_chain_ending_outside_the_answer_is_nodata() -> None:
    # A recursive resolver sends the whole chain: a last name without records is NODATA
    # (an empty Answer, remembered as long as the SOA says), not an error.
    chain = [cname(NAME, "gone.example.net", 120)]
    assert parse(response(chain)) == Answer((), 0)
    assert parse(response(chain, authority=(soa(600, 60),))) == Answer((), 60)
    assert parse(response([cname(NAME, "gone.example.net", 20)], authority=(soa(600, 60),))) == (
        Answer((), 20)
    )


def test_nodata_without_records_takes_the_soa_ttl() -> None:
    assert parse(response([], authority=(soa(600, 45),))) == Answer((), 45)
    assert parse(response([])) == Answer((), 0)


def test_cname_loop_is_an_error() -> None:
    data = response([cname(NAME, "x.example.net"), cname("x.example.net", NAME)])
    with pytest.raises(DnsError, match="loops"):
        parse(data)
    with pytest.raises(DnsError, match="loops"):
        parse(response([cname(NAME, NAME)]))


def test_cname_chain_length_is_bounded() -> None:
    def chain(links: int) -> bytes:
        names = [NAME] + [f"hop{i}.example.net" for i in range(links)]
        records = [cname(owner, target) for owner, target in itertools.pairwise(names)]
        return response([*records, a(names[-1], "10.0.0.1")])

    assert parse(chain(MAX_CNAME_CHAIN)) == Answer(("10.0.0.1",), 300)
    with pytest.raises(DnsError, match="longer than 8"):
        parse(chain(MAX_CNAME_CHAIN + 1))


def test_two_cnames_for_one_name_is_an_error() -> None:
    data = response([cname(NAME, "a.example.net"), cname(NAME, "b.example.net")])
    with pytest.raises(DnsError, match="several CNAMEs"):
        parse(data)


def test_compressed_names_are_read() -> None:
    data = SAMPLES["cname"]
    assert b"\xc0\x0c" in data  # the CNAME's owner is the question's name
    assert b"\x02ns\xc0\x1c" in data  # the SOA's names end in the question's suffix
    assert parse(data) == Answer(("192.0.2.1",), 300)


def hand_made(answer: bytes, ancount: int = 1) -> bytes:
    """A response whose question is ``x.`` type A at offset 12; its answers start at 19."""
    header = struct.pack("!HHHHHH", QID, 0x8180, 1, ancount, 0, 0)
    return header + b"\x01x\x00" + struct.pack("!HH", A, 1) + answer


def rdata(last: int) -> bytes:
    """Type A, class IN, TTL 60, address 10.0.0.``last``: what follows an owner name."""
    return struct.pack("!HHIH", A, 1, 60, 4) + bytes([10, 0, 0, last])


def test_pointer_to_a_pointer_is_followed() -> None:
    first = b"\xc0\x0c" + rdata(1)  # at 19: the question's name
    second = b"\xc0\x13" + rdata(2)  # at 33: the name at 19, itself a pointer
    assert parse(hand_made(first + second, ancount=2), name="x") == Answer(
        ("10.0.0.1", "10.0.0.2"), 60
    )


@pytest.mark.parametrize(
    ("owner", "match"),
    [
        (b"\xc0\x13", "does not go back"),  # points at itself (offset 19)
        (b"\x01y\xc0\x13", "does not go back"),  # points at its own start: a loop
        (b"\xc0\x40", "does not go back"),  # points forward
        (b"\xff\xff", "does not go back"),  # points past the end
        (b"\x40y", "label type 0x40"),  # the extended label type (RFC 6891 retired it)
        (b"\x81y", "label type 0x81"),  # reserved
        (b"\x05y", "past the end"),  # a label longer than what is left
        (b"\xc0", "past the end"),  # half a pointer
    ],
)
def test_bad_names_are_errors(owner: bytes, match: str) -> None:
    with pytest.raises(DnsError, match=match):  # (before the rest of the record is read)
        parse(hand_made(owner), name="x")


def test_name_over_255_bytes_is_an_error() -> None:
    owner = (b"\x3f" + b"y" * 63) * 4 + b"\x00"  # 257 bytes uncompressed
    with pytest.raises(DnsError, match="longer than 255"):
        parse(hand_made(owner + rdata(1)), name="x")


def test_name_over_255_bytes_through_pointers_is_an_error() -> None:
    # Each owner is a 63-byte label and a pointer to the owner before it: the fourth
    # spells 4 * 64 + 2 + 1 bytes, though each record's owner takes 66 on the wire.
    records = b""
    previous = 12
    for _ in range(4):
        at = 19 + len(records)
        records += b"\x3f" + b"z" * 63 + struct.pack("!H", 0xC000 | previous) + rdata(1)
        previous = at
    parse(hand_made(records[: 3 * 80], ancount=3), name="x")  # three are short enough
    with pytest.raises(DnsError, match="longer than 255"):
        parse(hand_made(records, ancount=4), name="x")


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_every_prefix_of_an_answer_is_an_error(sample: str) -> None:
    data = SAMPLES[sample]
    parse(data, qtype=AAAA if sample == "aaaa" else A)  # the whole answer parses
    for end in range(len(data)):
        with pytest.raises(DnsError):
            parse(data[:end], qtype=AAAA if sample == "aaaa" else A)


def test_bytes_after_the_last_record_are_an_error() -> None:
    with pytest.raises(DnsError, match="1 bytes after"):
        parse(SAMPLES["a"] + b"\x00")


def test_nxdomain_is_an_empty_answer_with_the_soa_ttl() -> None:
    assert parse(SAMPLES["nxdomain"]) == Answer((), 30)  # the SOA's MINIMUM
    data = response([], rcode=3, authority=(soa(10, 3600),))
    assert parse(data) == Answer((), 10)  # the SOA's own TTL, when less (RFC 2308)
    assert parse(response([], rcode=3)) == Answer((), 0)


def test_bad_soa_length_is_an_error() -> None:
    bad = RR("cluster.local", QTYPE.SOA, ttl=60, rdata=RD(b"\x00\x00" + b"\x00" * 19))
    with pytest.raises(DnsError, match="SOA"):
        parse(response([], rcode=3, authority=(bad,)))


@pytest.mark.parametrize(("rcode", "text"), [(1, "FORMERR"), (2, "SERVFAIL"), (5, "REFUSED"),
                                             (9, "error")])  # fmt: skip
def test_error_rcodes_are_errors(rcode: int, text: str) -> None:
    with pytest.raises(DnsError, match=rf"{text} for {NAME} \(rcode {rcode}\)"):
        parse(response([], rcode=rcode))


def test_header_mismatches_are_errors() -> None:
    good = SAMPLES["a"]
    with pytest.raises(DnsError, match="id 16963 does not match query id 16962"):
        parse(response([a(NAME, "10.0.0.1")], qid=QID + 1))
    with pytest.raises(DnsError, match="not a response"):
        parse(with_flags(good, clear_bits=0x8000))
    with pytest.raises(DnsError, match="opcode 2"):
        parse(with_flags(good, set_bits=2 << 11))
    with pytest.raises(DnsError, match="shorter than a header"):
        parse(b"")


def test_question_mismatches_are_errors() -> None:
    with pytest.raises(DnsError, match="another question"):
        parse(SAMPLES["a"], name="api.default.svc.cluster.local")
    with pytest.raises(DnsError, match="another question"):
        parse(SAMPLES["a"], qtype=AAAA)
    no_question = SAMPLES["a"][:4] + b"\x00\x00" + SAMPLES["a"][6:]
    with pytest.raises(DnsError, match="0 questions"):
        parse(no_question)


def test_truncated_answer_asks_for_tcp() -> None:
    full = with_flags(SAMPLES["a"], set_bits=0x0200)
    with pytest.raises(Truncated):
        parse(full)
    question_only = with_flags(response([]), set_bits=0x0200)
    with pytest.raises(Truncated):
        parse(question_only)
    assert issubclass(Truncated, DnsError)


def test_address_of_the_wrong_size_is_an_error() -> None:
    bad = RR(NAME, QTYPE.A, ttl=60, rdata=RD(b"\x0a\x00\x00\x01\x00"))
    with pytest.raises(DnsError, match="5 bytes"):
        parse(response([bad]))


def test_ttl_with_the_top_bit_set_is_zero() -> None:
    data = response([a(NAME, "10.0.0.1", 0x80000001), a(NAME, "10.0.0.2", 60)])
    assert parse(data) == Answer(("10.0.0.1", "10.0.0.2"), 0)


@pytest.mark.parametrize("qtype", [A, AAAA])
@pytest.mark.parametrize("name", [NAME, NAME + ".", "_http._tcp.Consul", "x"])
def test_query_parses_with_dnslib(name: str, qtype: int) -> None:
    query = DNSRecord.parse(build_query(name, qtype, 0xBEEF))
    assert query.header.id == 0xBEEF
    assert (query.header.qr, query.header.rd, query.header.opcode) == (0, 1, 0)
    assert [str(q.qname) for q in query.questions] == [name.rstrip(".") + "."]
    assert (query.q.qtype, query.q.qclass) == (qtype, 1)
    assert (query.header.a, query.header.auth, query.header.ar) == (0, 0, 0)


def test_longest_names_are_accepted() -> None:
    label = "a" * 63
    longest = ".".join([label, label, label, "b" * 61])  # 253 characters
    assert len(longest) == 253
    assert str(DNSRecord.parse(build_query(longest + ".", A, 1)).q.qname) == longest + "."


@pytest.mark.parametrize(
    "name",
    ["", ".", "a..b", ".a", "a" * 64 + ".com", ".".join(["a" * 63] * 3 + ["b" * 62]),
     "exämple.com", "bücher", "a b.com", "a/b", "a*b", "a.b..", "a\x00b"],
)  # fmt: skip
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="dns name"):
        build_query(name, A, 1)
    with pytest.raises(ValueError, match="dns name"):
        parse_response(SAMPLES["a"], QID, name, A)


def test_bad_query_type_and_id_are_rejected() -> None:
    with pytest.raises(ValueError, match="query type 33"):
        build_query(NAME, 33, 1)
    with pytest.raises(ValueError, match="query type 5"):
        parse_response(SAMPLES["a"], QID, NAME, 5)
    for qid in (-1, 0x10000):
        with pytest.raises(ValueError, match="16 bits"):
            build_query(NAME, A, qid)


def test_random_bytes_raise_only_dns_errors() -> None:
    rng = random.Random(1035)
    header = struct.pack("!HH", QID, 0x8180)
    for _ in range(3000):
        body = rng.randbytes(rng.randrange(0, 120))
        counts = struct.pack("!HHHH", 1, rng.randrange(4), rng.randrange(3), rng.randrange(3))
        for data in (body, header + counts + body):
            try:
                parse(data)
            except DnsError:
                pass


def test_mutated_answers_raise_only_dns_errors() -> None:
    rng = random.Random(2308)
    samples = list(SAMPLES.values())
    for _ in range(4000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(4, len(data))] = rng.randrange(256)  # (keep id and flags)
        for qtype in (A, AAAA):
            try:
                answer = parse(bytes(data), qtype=qtype)
            except DnsError:
                continue
            assert answer.ttl >= 0 and len(set(answer.addresses)) == len(answer.addresses)


def test_tcp_framing_round_trip_and_partial_data() -> None:
    query = build_query(NAME, A, QID)
    framed = tcp_frame(query)
    assert framed[:2] == struct.pack("!H", len(query))
    assert tcp_unframe(framed) == query
    assert tcp_unframe(framed + b"more") == query  # (one query per connection)
    for end in range(len(framed)):
        assert tcp_unframe(framed[:end]) is None
    assert tcp_unframe(b"\x00\x00") == b""
    assert tcp_unframe(tcp_frame(SAMPLES["cname"])) == SAMPLES["cname"]
    with pytest.raises(ValueError, match="too long"):
        tcp_frame(b"\x00" * 0x10000)
