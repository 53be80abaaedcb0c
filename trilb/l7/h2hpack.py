"""HPACK (RFC 7541) for trilb's side of a client's HTTP/2: request blocks in, responses out.

Theory of operation. Decoding is per connection (the client's dynamic table): a block is
a run of representations (indexed, literal with or without indexing, table size update)
whose fields are checked against the header list limit as they come, so a block that
decodes to more than the limit (the HPACK bomb: a few bytes that index a large entry
again and again) stops there. Huffman-coded strings go through hpack's table-driven
decoder, which this module borrows (a Python port of the same table would only be
slower). Encoding is per connection too: a field is its static entry when one matches
whole; the first time it is seen, a literal the client does not index (named by static
index when it can be; no Huffman coding); the second time, a literal the client adds
to its dynamic table; from then on one or two bytes, its index. Only a field that
repeats takes room in the table, so unique values (a request id) do not push out the
ones that recur (Server, Content-Type, Date within its second). Credentials and
cookies, and fields an HTTP/2 backend marked so, go as never-indexed literals (7.1.3).
A request field's never-indexed mark is not kept: the request goes on over HTTP/1.1,
or through h2, which marks credentials and short cookies itself.

Every malformed input raises CompressionError (a connection error for HTTP/2: the
table's state is lost). Two small classes and their helpers; no I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import hpack.exceptions
from hpack.huffman_table import decode_huffman
from hpack.struct import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

Fields = list[tuple[bytes, bytes]]

STATIC: Final[tuple[tuple[bytes, bytes], ...]] = tuple(HeaderTable.STATIC_TABLE)
# The dynamic table trilb's encoder uses at most (the client may allow more).
TABLE_SIZE: Final = 4096
# Fields seen once per connection (their hashes: a collision only indexes a field one
# response early); emptied when full, which bounds it against unique values. Only short
# fields: a long one is rarely repeated whole.
SEEN: Final = 512
SEEN_FIELD: Final = 128
# Fields never put in a table (RFC 7541 7.1.3): secrets a table could leak to a
# compression-ratio attack (CRIME) on a connection that mixes them with other data.
NEVER_INDEXED: Final = frozenset(
    (b"authorization", b"proxy-authorization", b"set-cookie", b"cookie")
)
# Each entry costs its name and value plus 32 bytes (RFC 7541 4.1), as SETTINGS_MAX_
# HEADER_LIST_SIZE counts a list (RFC 9113 6.5.2).
ENTRY_OVERHEAD: Final = 32


class CompressionError(Exception):
    """A header block that is not valid HPACK."""


class HeaderListTooLarge(CompressionError):
    """A header block that decodes to more than the header list limit."""


class Decoder:
    """One connection's HPACK decoder, its dynamic table at most TABLE_SIZE (the
    default SETTINGS_HEADER_TABLE_SIZE, which trilb does not change).

    Args:
      max_list: the largest decoded header list (name + value + 32 per field).
    """

    __slots__ = ("max_list", "max_size", "size", "table")

    def __init__(self, max_list: int) -> None:
        self.max_list = max_list
        self.max_size = TABLE_SIZE
        self.size = 0
        self.table: deque[tuple[bytes, bytes]] = deque()  # newest first

    def decode(self, data: bytes) -> Fields:
        """The fields of one whole header block.

        Raises:
          HeaderListTooLarge: the list outgrows ``max_list``.
          CompressionError: anything else malformed.
        """
        fields: Fields = []
        pos, end = 0, len(data)
        listed = 0
        while pos < end:
            byte = data[pos]
            if byte & 0x80:  # an indexed field (6.1): most of a connection's, after its first
                if byte < 0xFF:  # (its index in the byte itself)
                    pos += 1
                    field = STATIC[byte - 0x81] if 0x80 < byte < 0xBE else self._entry(byte & 0x7F)
                else:
                    index, pos = _integer(data, pos, 0x7F)
                    field = self._entry(index)
            elif byte & 0x40:  # a literal the table keeps (6.2.1)
                index, pos = _integer(data, pos, 0x3F)
                name, pos = (self._entry(index)[0], pos) if index else _string(data, pos)
                value, pos = _string(data, pos)
                field = (name, value)
                self._add(field)
            elif byte & 0x20:  # a dynamic table size update (6.3)
                if fields:  # (only at the start of a block: 4.2)
                    raise CompressionError("a table size update after a field")
                size, pos = _integer(data, pos, 0x1F)
                if size > TABLE_SIZE:
                    raise CompressionError(f"a table size of {size}, over {TABLE_SIZE}")
                self.max_size = size
                self._evict(0)
                continue
            else:  # a literal not indexed (6.2.2) or never indexed (6.2.3)
                index, pos = _integer(data, pos, 0x0F)
                name, pos = (self._entry(index)[0], pos) if index else _string(data, pos)
                value, pos = _string(data, pos)
                field = (name, value)
            listed += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
            if listed > self.max_list:
                raise HeaderListTooLarge(f"a header list over {self.max_list} bytes")
            fields.append(field)
        return fields

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= 61:
            return STATIC[index - 1]
        at = index - 62
        if index == 0 or at >= len(self.table):
            raise CompressionError(f"no table entry {index}")
        return self.table[at]

    def _add(self, field: tuple[bytes, bytes]) -> None:
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        if size > self.max_size:  # (it empties the table and is not kept: 4.4)
            self.table.clear()
            self.size = 0
            return
        self._evict(size)
        self.table.appendleft(field)
        self.size += size

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until ``room`` more bytes fit."""
        table = self.table
        while self.size + room > self.max_size:
            name, value = table.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD


def _integer(data: bytes, pos: int, mask: int) -> tuple[int, int]:
    """An integer with a prefix of ``mask``'s bits at ``pos`` (5.1); it and the next pos."""
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise CompressionError("a truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:  # (up to 5 bytes: more than any length or index of ours needs)
            raise CompressionError("an integer too long")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal at ``pos`` (5.2), Huffman-decoded if it is coded; it and the next
    pos."""
    if pos >= len(data):
        raise CompressionError("a truncated field")
    coded = data[pos] & 0x80
    length, pos = _integer(data, pos, 0x7F)
    stop = pos + length
    if stop > len(data):
        raise CompressionError("a truncated string")
    if not coded:
        return data[pos:stop], stop
    try:
        return decode_huffman(data[pos:stop]), stop
    except hpack.exceptions.HPACKError as exc:
        raise CompressionError(f"a Huffman string: {exc}") from None


# Static table indices (RFC 7541 appendix A): a status with its own entry (as the one
# byte that sends it), and each name's first entry (literals name it by index).
_STATUS: Final = {v: bytes((0x80 | i,)) for i, (n, v) in enumerate(STATIC, 1) if n == b":status"}
_NAMES: Final[dict[bytes, int]] = {}
for _i, (_name, _) in enumerate(STATIC, 1):
    _NAMES.setdefault(_name, _i)


def _prefixed(value: int, bits: int, flags: int = 0) -> bytes:
    """An integer with a ``bits``-bit prefix (5.1) after the first byte's ``flags``."""
    top = (1 << bits) - 1
    if value < top:
        return bytes((flags | value,))
    out = bytearray((flags | top,))
    value -= top
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes, flags: int, bits: int) -> bytes:
    """A literal field: indexed by the decoder (0x40, 6 bits), never indexed (0x10, 4)."""
    index = _NAMES.get(name, 0)
    if index:
        head = _prefixed(index, bits, flags)
    else:
        head = bytes((flags,)) + _prefixed(len(name), 7) + name
    return head + _prefixed(len(value), 7) + value


class Encoder:
    """One connection's HPACK encoder (see the module's theory for what goes how).

    ``resize`` follows the client's SETTINGS_HEADER_TABLE_SIZE: the next block then
    starts with the size update RFC 7541 4.2 asks for (nghttp2 refuses a block without).
    """

    __slots__ = ("entries", "inserted", "low", "max_size", "seen", "size", "update", "where")

    def __init__(self) -> None:
        self.max_size = TABLE_SIZE
        self.size = 0
        self.inserted = 0  # entries ever added: the newest's ordinal is inserted - 1
        self.entries: deque[tuple[tuple[bytes, bytes], int]] = deque()  # oldest first
        self.where: dict[tuple[bytes, bytes], int] = {}  # field -> ordinal, while in it
        self.seen: set[int] = set()  # hashes of fields seen once
        # Size updates due at the next block's start: the smallest since the last block
        # and the last (RFC 7541 4.2: a client that went down and back up needs both).
        self.low = -1
        self.update = -1

    def resize(self, client_max: int) -> None:
        self.max_size = min(client_max, TABLE_SIZE)
        self.update = self.max_size
        self.low = self.max_size if self.low < 0 else min(self.low, self.max_size)
        self._evict(0)

    def encode(self, fields: Fields) -> bytes:
        """One header block. Every field's name and value must be bytes: the table's
        state changes as fields are encoded, so one that fails half-way leaves it out of
        step with the client's (the caller then ends the connection)."""
        parts = []
        if self.update >= 0:
            if self.low < self.update:
                parts.append(_prefixed(self.low, 5, 0x20))
            parts.append(_prefixed(self.update, 5, 0x20))
            self.update = self.low = -1
        where, seen = self.where, self.seen
        for field in fields:
            name, value = field
            if name == b":status" and value in _STATUS:
                parts.append(_STATUS[value])
                continue
            if name in NEVER_INDEXED or field.__class__ is NeverIndexedHeaderTuple:
                parts.append(_literal(name, value, 0x10, 4))
                continue
            ordinal = where.get(field)
            if ordinal is not None:  # in the table: its index (the newest is 62)
                index = 61 + self.inserted - ordinal
                parts.append(bytes((0x80 | index,)) if index < 127 else _prefixed(index, 7, 0x80))
                continue
            size = len(name) + len(value) + ENTRY_OVERHEAD
            key = hash(field)
            if key in seen and size <= self.max_size:  # the second time: into the table
                parts.append(_literal(name, value, 0x40, 6))
                self._evict(size)
                self.entries.append((field, self.inserted))
                where[field] = self.inserted
                self.inserted += 1
                self.size += size
                continue
            if size <= SEEN_FIELD:
                if len(seen) >= SEEN:
                    seen.clear()
                seen.add(key)
            parts.append(_literal(name, value, 0, 4))
        return b"".join(parts)

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until ``room`` more bytes fit (as the decoder will)."""
        while self.size + room > self.max_size:
            field, ordinal = self.entries.popleft()
            self.size -= len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
            if self.where.get(field) == ordinal:
                del self.where[field]
