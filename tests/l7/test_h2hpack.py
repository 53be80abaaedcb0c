"""trilb's HPACK (l7/h2hpack.py) against the hpack library: the same fields from the same
blocks, over a connection's worth of them, and refusals instead of crashes."""

from __future__ import annotations

import random

import hpack
import pytest

from trilb.l7.h2hpack import CompressionError, Decoder, Encoder, HeaderListTooLarge

NAMES = [b":method", b":path", b":authority", b":scheme", b"accept", b"user-agent",
         b"cookie", b"x-request-id", b"content-type", b"authorization", b"x-a",
         b"accept-encoding"]  # fmt: skip
VALUES = [b"", b"GET", b"/", b"gzip, deflate", b"text/html", b"a" * 200, b"\xff\x00bin"]


def random_fields(rng: random.Random) -> list[tuple[bytes, bytes]]:
    def value() -> bytes:
        return rng.choice(VALUES) if rng.random() < 0.6 else rng.randbytes(rng.randrange(40))

    return [(rng.choice(NAMES), value()) for _ in range(rng.randrange(1, 12))]


@pytest.mark.parametrize("huffman", [True, False])
def test_a_connections_blocks_decode_as_hpack_decodes_them(huffman: bool) -> None:
    rng = random.Random(7 + huffman)
    encoder = hpack.Encoder()
    ours = Decoder(max_list=1 << 20)
    theirs = hpack.Decoder(max_header_list_size=1 << 20)
    for step in range(400):
        if step % 50 == 25:  # (the encoder announces a new table size: evictions, updates)
            encoder.header_table_size = rng.choice((0, 64, 300, 4096))
        fields = random_fields(rng)
        sensitive = rng.random() < 0.1
        block = encoder.encode([hpack.NeverIndexedHeaderTuple(*f) if sensitive else f
                                for f in fields], huffman=huffman)  # fmt: skip
        assert ours.decode(block) == [tuple(f) for f in theirs.decode(block, raw=True)] == fields
        assert ours.size == theirs.header_table._current_size
        assert list(ours.table) == list(theirs.header_table.dynamic_entries)


def test_a_header_list_over_the_limit_stops_decoding() -> None:
    encoder = hpack.Encoder()
    block = encoder.encode([(b":method", b"GET"), *[(b"x-big", b"b" * 3000)] * 100])
    assert len(block) < 3200  # (the rest are 1-byte references to one table entry)
    with pytest.raises(HeaderListTooLarge):
        Decoder(max_list=16384).decode(block)
    assert len(Decoder(max_list=1 << 20).decode(block)) == 101


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\xbe",  # index 62, an empty dynamic table
        b"\xff\xff\xff\xff\xff\xff\x01",  # an integer of 7 bytes
        b"\xff",  # a truncated integer
        b"\x00\x05ab",  # a truncated string
        b"\x00\x81\xff\x00",  # a Huffman string that is all padding of ones past 7 bits
        b"\x3f\xe2\x1f",  # a table size of 4097
        b"\x82\x20",  # a table size update after a field
        b"\x40",  # a literal without its name
    ],
)
def test_malformed_blocks_are_compression_errors(block: bytes) -> None:
    with pytest.raises(CompressionError):
        Decoder(max_list=1 << 20).decode(block)


def test_random_bytes_are_decoded_as_hpack_does_or_refused() -> None:
    rng = random.Random(11)
    agreed = 0
    for _ in range(20000):
        block = rng.randbytes(rng.randrange(1, 24))
        try:
            ours = Decoder(max_list=1 << 16).decode(block)
        except CompressionError:
            ours = None
        try:
            theirs = [
                tuple(f)
                for f in hpack.Decoder(max_header_list_size=1 << 16).decode(block, raw=True)
            ]
        except hpack.exceptions.HPACKError:
            theirs = None
        if ours is not None:  # (trilb may refuse more: a size update after a field)
            assert ours == theirs, block
            agreed += 1
    assert agreed > 300  # (the comparison ran on blocks that decode, not only refusals)


@pytest.mark.parametrize("status", [b"200", b"204", b"404", b"201", b"418", b"503"])
def test_every_status_and_field_encodes_as_hpack_decodes_it(status: bytes) -> None:
    fields = [(b":status", status), (b"server", b"trilb"), (b"x-new-name", b"a" * 127),
              (b"x-" + b"n" * 200, b""), (b"date", b"Fri, 27 Nov 2026 22:00:00 GMT")]  # fmt: skip
    encoder, theirs, ours = Encoder(), hpack.Decoder(), Decoder(max_list=1 << 16)
    sizes = []
    for _ in range(3):  # literals, then literals indexed, then indices (the short ones)
        encoded = encoder.encode(fields)
        assert theirs.decode(encoded, raw=True) == fields
        assert ours.decode(encoded) == fields
        sizes.append(len(encoded))
    assert sizes[2] < sizes[0] - 30  # (server and date: one byte each)


def test_responses_encoded_on_a_connection_decode_as_sent_and_repeats_shrink() -> None:
    rng = random.Random(3)
    encoder = Encoder()
    theirs = hpack.Decoder()
    common = [(b":status", b"200"), (b"server", b"nginx"), (b"content-type", b"text/html"),
              (b"date", b"Fri, 27 Nov 2026 22:00:00 GMT")]  # fmt: skip
    for step in range(600):
        if step % 97 == 50:  # the client changes its table size (SETTINGS)
            size = rng.choice((0, 100, 256, 4096, 65536))
            theirs.max_allowed_table_size = size
            encoder.resize(size)
        fields = [*common, *random_fields(rng)[: rng.randrange(4)]]
        if rng.random() < 0.3:
            fields.append((b"x-long", b"l" * rng.randrange(100, 300)))
        block = encoder.encode(fields)
        assert [tuple(f) for f in theirs.decode(block, raw=True)] == fields, step
        assert theirs.header_table._current_size == encoder.size <= encoder.max_size
    # A response of fields seen before is one byte a field (once its entries are in).
    assert len(encoder.encode(common)) == len(common)
    assert len(encoder.encode(common)) == len(common)


def test_a_table_too_small_for_a_field_leaves_it_a_literal() -> None:
    encoder = Encoder()
    encoder.resize(40)
    theirs = hpack.Decoder()
    theirs.max_allowed_table_size = 40
    field = [(b"server", b"a-longer-name")]  # 6 + 13 + 32 = 51 > 40
    for _ in range(3):
        assert [tuple(f) for f in theirs.decode(encoder.encode(field), raw=True)] == field
    assert not encoder.where and theirs.header_table._current_size == 0


def test_a_table_shrunk_then_grown_between_two_blocks_is_signalled_both_ways() -> None:
    encoder = Encoder()
    theirs = hpack.Decoder()
    for _ in range(2):  # (an entry in the table, to be evicted by the shrink)
        theirs.decode(encoder.encode([(b"server", b"trilb")]))
    encoder.resize(0)
    encoder.resize(4096)
    block = encoder.encode([(b"server", b"trilb")])
    assert block.startswith(b"\x20\x3f\xe1\x1f")  # 0, then 4096 (RFC 7541 4.2)
    assert [tuple(f) for f in theirs.decode(block, raw=True)] == [(b"server", b"trilb")]
    # (emptied by the shrink; the field, seen before, went back in: both tables agree)
    assert theirs.header_table._current_size == encoder.size == 6 + 5 + 32


def test_credentials_cookies_and_marked_fields_are_never_indexed() -> None:
    encoder = Encoder()
    theirs = hpack.Decoder()
    fields = [(b"set-cookie", b"sid=1"), (b"authorization", b"Basic eA=="),
              hpack.NeverIndexedHeaderTuple(b"x-secret", b"s")]  # fmt: skip
    for _ in range(3):
        decoded = theirs.decode(encoder.encode(fields), raw=True)
        assert decoded == fields
        assert all(isinstance(f, hpack.NeverIndexedHeaderTuple) for f in decoded)
    assert not encoder.where and not encoder.seen


def test_fields_seen_once_are_remembered_in_bounded_room() -> None:
    encoder = Encoder()
    for i in range(5000):
        encoder.encode([(b"x-request-id", b"%d" % i)])
    assert len(encoder.seen) <= 512 and not encoder.where
