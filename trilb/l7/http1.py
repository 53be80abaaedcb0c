"""HTTP/1.1 on the wire: strict head parsers, chunked framing checks, head serializers.

Owns the sans-IO side of HTTP/1.1 for both hops: RequestParser (client requests),
ResponseParser (backend responses), ChunkedReader (checks a chunked body while it is
relayed unchanged) and serialize_request / serialize_response (forwarded heads). It does
no I/O, never buffers a body, and does not strip hop-by-hop headers or choose statuses
for anything but malformed input (l7/proxy does). h1parse holds the llhttp machinery and
the field rules; its theory-of-operation comment records what llhttp checks and what not.

Chunked bodies are relayed as the client or backend framed them, not re-chunked: llhttp,
through httptools, cannot say where a message ends inside a buffer, which pipelining
needs, so ChunkedReader checks the framing itself, as strictly as llhttp does. It only
hands out bytes it has checked, so nothing past a framing error is ever forwarded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from time import monotonic
from typing import Final

import httptools

from trilb.errors import ProtocolError
from trilb.l7.h1parse import (
    CTL_RE,
    HOST_CHARS,
    PLAIN_CONNECTION,
    TCHAR,
    VERSION_RE,
    Fields,
    HeadParser,
    check_target,
    connection,
    content_length,
    expect_continue,
    request_framing,
    request_line,
    scan_fields,
    show,
    split_fields,
    start_line,
)
from trilb.messages import Framing, Headers, RequestHead, ResponseHead
from trilb.obs.counters import tally

HEXDIGITS: Final = b"0123456789abcdefABCDEF"
# 16 hex digits hold any 64-bit size; more can only be padding that parsers disagree on.
MAX_CHUNK_SIZE_DIGITS: Final = 16
# A chunk-size line with extensions; clients send a few bytes, 4 KiB is generous.
MAX_CHUNK_LINE: Final = 4096
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 9112 7.1.1 chunk-ext, after the size: *( BWS ";" BWS name [ BWS "=" BWS value ] ).
CHUNK_EXT_RE: Final = re.compile(
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
)
# Response fields that framing or forwarding looks at (l7/forward.HOP_BY_HOP and Via),
# found at the start of a line of the lowercased head (llhttp allows no space before the
# colon, and no CR or LF inside a value, so nothing else can match).
# The alternatives share prefixes as a trie: re tries alternatives in turn, and this
# takes findall from 1.6 to 0.9 µs on a typical head (nginx's).
RESPONSE_FIELD_RE: Final = re.compile(
    rb"\r\n(con(?:tent-length|nection)|transfer-encoding|keep-alive"
    rb"|proxy-(?:connection|authenticate|authorization)|t(?:e|railer)|upgrade|via)"
    rb":[ \t]*([^\r]*)"
)
# Trailers that would change framing or routing if a next hop merged them into the head.
FORBIDDEN_TRAILERS: Final = frozenset((b"content-length", b"transfer-encoding", b"host"))
# ChunkedReader states.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class RequestParser(HeadParser):
    """Parses the request heads of one client connection, strictly.

    Feed bytes as they arrive. ``feed`` returns None until a head is complete, then the
    RequestHead; ``leftover`` then holds the bytes that followed it (the start of the body,
    or of the next pipelined request). Relay a ``Framing.LENGTH`` body raw, check a
    ``Framing.CHUNKED`` one with ChunkedReader, and feed what follows the body back into
    the same parser for the next request. After a ProtocolError the connection is out of
    sync: answer ``error.status`` and close it.

    Args:
      max_line: the longest request line accepted, in bytes (CRLF excluded); longer is 414.
      max_headers_size: the largest head accepted, request line included; larger is 431.
      max_headers: the most header fields accepted; more is 431.
    """

    __slots__ = ()
    _kind = "request"
    _status = 400
    _line_status = 414
    _size_status = 431

    # __init__ is HeadParser's (one call less per connection).

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp drops the whitespace before a value but keeps the whitespace after it.
        self._fields.append((name.lower(), value.rstrip(b" \t")))

    def _new_llhttp(self) -> httptools.HttpRequestParser:
        return httptools.HttpRequestParser(self)

    def feed(self, data: bytes) -> RequestHead | None:
        """Take the next bytes from the client; return the head once it is complete.

        Raises:
          ProtocolError: the head is malformed, ambiguous or over a limit.
        """
        line = self._take(data)
        if line is None:
            return None
        head = self._build(line, self._take_fields())
        self._next_message(head.keep_alive and head.framing is Framing.NONE and not head.upgrade)
        return head

    def _build(self, line: bytes, fields: Fields) -> RequestHead:
        method, target, version = request_line(line)
        cl, te, hosts, host, conn, expect, upgrade, others = scan_fields(fields, 400)
        upgrade_field = upgrade
        http11 = version == b"1.1"
        if hosts != 1 and (hosts or http11):
            raise ProtocolError(400, "duplicate host header" if hosts else "missing host header")
        if host is not None and host.translate(None, HOST_CHARS):
            raise ProtocolError(400, f"invalid host header {show(host)}")
        if target[:1] != b"/":
            check_target(method, target, host)
        if b"#" in target:
            raise ProtocolError(400, f"fragment in request target {show(target)}")
        if cl is None and te is None:
            framing, length = Framing.NONE, None
        else:
            framing, length = request_framing(cl, te, http11)
        keep_alive, tokens = connection(conn, http11)
        if upgrade is not None:
            upgrade = upgrade.strip().lower() if http11 and b"upgrade" in tokens else None
        raw = b""
        if (
            http11
            and not others
            and expect is None
            and upgrade_field is None
            and (conn is None or conn in PLAIN_CONNECTION)
        ):
            raw = self._raw[: self._raw_end - 2]
            if conn is not None:
                start = raw.lower().find(b"\r\nconnection:")
                raw = raw[:start] + raw[raw.find(b"\r\n", start + 2) :]
        return RequestHead(
            method,
            target,
            version,
            Headers(fields),
            framing,
            length,
            keep_alive,
            expect is not None and expect_continue(expect, http11),
            upgrade,
            raw,
        )

    def _llhttp_error(self, exc: Exception, source: bytes | bytearray) -> ProtocolError:
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            line = start_line(source)
            method = line.split(b" ", 1)[0]
            if not method or method.translate(None, TCHAR):
                return ProtocolError(400, f"invalid method token in request line {show(line)}")
            if b" " in line:
                return ProtocolError(501, f"method {show(method)} is not implemented")
            return ProtocolError(501, f"method starting {show(method)} is not implemented")
        return super()._llhttp_error(exc, source)

    def _error(self, reason: str, source: bytes | bytearray) -> ProtocolError:
        match = VERSION_RE.search(start_line(source))
        if match and match[1] not in (b"1.0", b"1.1"):  # a clearer cause than llhttp's
            return ProtocolError(505, f"http version {show(match[1])} is not supported")
        return super()._error(reason, source)


class ResponseParser(HeadParser):
    """Parses the response heads of one backend connection, strictly.

    Like RequestParser, but call ``expect`` with the request's method before its
    response is fed (a response to HEAD has no body; the clock starts for the server's
    latency, tallied with the final status into ``counts``, its server's counters). A
    1xx head other than 101 is interim: forward it and keep feeding for the final head
    of the same request. ``Framing.CLOSE`` means
    the body runs until the backend closes. Every error is a 502.

    Args:
      method: the method of the request the next response answers.
      max_line: the longest status line accepted, in bytes.
      max_headers_size: the largest head accepted, status line included.
      max_headers: the most header fields accepted.
    """

    __slots__ = ("counts", "method", "observe", "sent")
    _kind = "response"
    _status = 502
    _line_status = 502
    _size_status = 502

    def __init__(
        self,
        method: bytes = b"GET",
        max_line: int = 8192,
        max_headers_size: int = 65536,
        max_headers: int = 100,
        counts: list[int] | None = None,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.method = method
        self.counts = counts
        # Told each final status (the passive check of eject_on_5xx), if set.
        self.observe = observe
        self.sent = 0.0
        super().__init__(max_line, max_headers_size, max_headers)

    def expect(self, method: bytes) -> None:
        """The request is sent: its response comes next."""
        self.method = method
        self.sent = monotonic()

    def _new_llhttp(self) -> httptools.HttpResponseParser:
        return httptools.HttpResponseParser(self)

    def feed(self, data: bytes) -> ResponseHead | None:
        """Take the next bytes from the backend; return the head once it is complete.

        Raises:
          ProtocolError: (status 502) the head is malformed, ambiguous or over a limit.
        """
        line = self._take(data)
        if line is None:
            return None
        head = self._build(line)
        counts = self.counts
        if counts is not None and (head.status >= 200 or head.status == 101):
            tally(counts, head.status, monotonic() - self.sent)
            if self.observe is not None:
                self.observe(head.status)
        reuse = head.keep_alive and head.framing is Framing.NONE
        if head.keep_alive and head.framing is Framing.LENGTH:
            # The whole body is here (a small response): llhttp takes it, without a
            # callback, and ends the message, so this llhttp serves the next response
            # too instead of a new one being made.
            length = head.content_length or 0
            if len(self.leftover) >= length:
                body = self.leftover
                self._execute_body(body if len(body) == length else memoryview(body)[:length])
                reuse = True
        self._next_message(reuse and self._msg_done)
        return head

    def on_message_complete(self) -> None:
        self._msg_done = True

    def _build(self, line: bytes) -> ResponseHead:
        version = line[5:8]
        if line[:5] != b"HTTP/" or (version != b"1.1" and version != b"1.0"):
            raise ProtocolError(502, f"unsupported status line {show(line)}")
        code = line[9:12]  # llhttp has checked it is three digits
        status = int(code) if code.isdigit() else 0
        reason = line[13:]
        if not 100 <= status <= 599 or (reason and reason != b"OK" and CTL_RE.search(reason)):
            raise ProtocolError(502, f"invalid status line {show(line)}")
        # The fields are not split here (llhttp checked them): the few that framing and
        # forwarding need are found in the lowercased head, the rest on demand.
        head = self._raw[: self._raw_end - 2]
        # A field line takes 4 bytes at least ("a:" CRLF): a short head cannot have
        # too many, and is not counted.
        if len(head) > 4 * self._max_headers and head.count(b"\r\n") - 1 > self._max_headers:
            raise ProtocolError(502, f"response has more than {self._max_headers} header fields")
        low = head.lower()
        cl = te = conn = None
        rawable = version == b"1.1"
        # Values come lowercased: each of these fields is compared without case.
        # findall: (name, value) pairs made in C, no match object per field.
        for name, value in RESPONSE_FIELD_RE.findall(low):
            value = value.rstrip(b" \t")
            if name == b"content-length":
                if cl is not None:  # llhttp rejects it already; the rule is stated here
                    raise ProtocolError(502, f"duplicate content-length {show(cl)}")
                cl = value
            elif name == b"transfer-encoding":
                if te is not None:
                    raise ProtocolError(502, "more than one transfer-encoding field")
                te = value
            elif name == b"connection":
                if conn is not None or value not in PLAIN_CONNECTION:
                    rawable = False  # fields named in Connection: the general path
                conn = value if conn is None else conn + b"," + value
            else:
                rawable = False  # another hop-by-hop field, or a Via to append to
        length = None if cl is None else int(cl) if cl.isdigit() else content_length(cl, 502)
        if te is not None and (version == b"1.0" or te.lower() != b"chunked"):
            raise ProtocolError(502, f"unsupported transfer-encoding {show(te)} in response")
        if self.method == b"HEAD" or status < 200 or status == 204 or status == 304:
            framing = Framing.NONE
        elif te is not None:
            framing = Framing.CHUNKED
        elif length is not None:
            framing = Framing.LENGTH if length else Framing.NONE
        else:
            framing = Framing.CLOSE
        if conn is None or conn == b"keep-alive":
            keep_alive = conn is not None or version == b"1.1"
        else:
            keep_alive = connection(conn, version == b"1.1")[0]
        if framing is Framing.CLOSE or status == 101:
            keep_alive = False
        raw = b""
        kept_line = False
        if rawable and not (te is not None and framing is Framing.NONE):
            # (a 204 or 304 saying chunked: the rebuilt head drops that, so must this)
            raw = head
            if conn == b"keep-alive":
                kept_line = True  # (cut by Proxy.response_wire if the client's connection closes)
            elif conn is not None:
                raw = without_connection(head, low)
        headers = Headers.deferred(partial(split_fields, head))
        return ResponseHead(status, reason, version, headers, framing, length, keep_alive, raw,
                            kept_line)  # fmt: skip


def without_connection(head: bytes, low: bytes | None = None) -> bytes:
    """``head`` (a raw head, see ResponseHead.raw) without its one Connection field;
    ``low``: the head lowercased, if at hand."""
    start = (head.lower() if low is None else low).find(b"\r\nconnection:")
    return head[:start] + head[head.find(b"\r\n", start + 2) :]


class ChunkedReader:
    """Checks the framing of one chunked body while its bytes are relayed unchanged.

    Feed the body's bytes as they arrive (the parser's leftover first) and forward what
    ``feed`` returns: only bytes already checked, so a chunk-size line split across reads
    is held back until its CRLF arrives. When the last chunk and the trailer section are
    complete, ``done`` is set, ``leftover`` holds what followed (the next message) and
    ``trailers`` the trailer fields, names lowercased. Feed nothing after ``done``.

    Args:
      response: the body comes from a backend, so errors are 502 (else 400 and 431).
      max_trailers_size: the most bytes of trailer section accepted.
      max_trailers: the most trailer fields accepted.
    """

    __slots__ = (
        "_left",
        "_limit_status",
        "_max_trailers",
        "_max_trailers_size",
        "_payload",
        "_pending",
        "_state",
        "_status",
        "_trailer_size",
        "done",
        "leftover",
        "trailers",
    )

    def __init__(
        self, *, response: bool = False, max_trailers_size: int = 65536, max_trailers: int = 100
    ) -> None:
        self._status = 502 if response else 400
        self._limit_status = 502 if response else 431
        self._max_trailers_size = max_trailers_size
        self._max_trailers = max_trailers
        self._state = _SIZE
        self._left = 0
        self._pending = b""
        self._trailer_size = 0
        self.done = False
        self.leftover = b""
        self.trailers = Headers()
        # While feed_payload runs: the chunk data it found, without the framing.
        self._payload: list[bytes] | None = None

    def feed_payload(self, data: bytes) -> bytes:
        """Like feed, but return only the chunks' data, checked, without the chunk
        framing or trailers (for a recipient that cannot take chunked, HTTP/1.0)."""
        payload: list[bytes] = []
        self._payload = payload
        try:
            self.feed(data)
        finally:
            self._payload = None
        return b"".join(payload)

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes of the body; return the checked bytes to forward as they are.

        Raises:
          ProtocolError: the chunk framing or a trailer field is invalid or over a limit.
        """
        buf = self._pending + data if self._pending else data
        pos = self._advance(buf)
        if self.done:
            self.leftover = buf[pos:]
            self._pending = b""
        else:
            self._pending = buf[pos:]
        return buf if pos == len(buf) else buf[:pos]

    def _advance(self, buf: bytes) -> int:
        pos = 0
        end = len(buf)
        while pos < end and not self.done:
            state = self._state
            if state == _DATA:
                take = min(self._left, end - pos)
                if self._payload is not None:
                    self._payload.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if buf[pos : pos + 2] != b"\r\n"[: end - pos]:
                    raise ProtocolError(self._status, "chunk data not followed by crlf")
                if end - pos < 2:
                    break
                pos += 2
                self._state = _SIZE
            else:
                eol = self._line_end(buf, pos)
                if eol < 0:
                    break
                if state == _SIZE:
                    self._size_line(buf[pos:eol])
                else:
                    self._trailer_line(buf[pos:eol])
                pos = eol + 2
        return pos

    def _line_end(self, buf: bytes, pos: int) -> int:
        """Where the CRLF ending the line at ``pos`` is, or -1 while it is incomplete."""
        eol = buf.find(b"\r\n", pos)
        stop = eol if eol >= 0 else len(buf) - 1  # a final CR may be half of a CRLF
        if buf.find(b"\n", pos, stop) >= 0 or buf.find(b"\r", pos, stop) >= 0:
            raise ProtocolError(self._status, "bare cr or lf in chunked framing")
        if self._state == _SIZE:
            if (eol if eol >= 0 else len(buf)) - pos > MAX_CHUNK_LINE:
                raise ProtocolError(self._status, f"chunk size line over {MAX_CHUNK_LINE} bytes")
        elif self._trailer_size + (eol if eol >= 0 else len(buf)) - pos > self._max_trailers_size:
            raise ProtocolError(
                self._limit_status, f"trailer section over {self._max_trailers_size} bytes"
            )
        return eol

    def _size_line(self, line: bytes) -> None:
        semi = line.find(b";")
        size = line if semi < 0 else line[:semi]
        if (
            not size
            or len(size) > MAX_CHUNK_SIZE_DIGITS
            or size.translate(None, HEXDIGITS)
            or (semi >= 0 and not CHUNK_EXT_RE.fullmatch(line, semi))
        ):
            raise ProtocolError(self._status, f"invalid chunk size line {show(line)}")
        self._left = int(size, 16)
        self._state = _DATA if self._left else _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self.done = True
            self._state = _DONE
            return
        self._trailer_size += len(line) + 2
        if len(self.trailers) >= self._max_trailers:
            raise ProtocolError(self._limit_status, f"more than {self._max_trailers} trailers")
        colon = line.find(b":")
        name = line[:colon].lower()
        value = line[colon + 1 :].strip(b" \t")
        if colon <= 0 or name.translate(None, TCHAR) or CTL_RE.search(value):
            raise ProtocolError(self._status, f"invalid trailer field line {show(line)}")
        if name in FORBIDDEN_TRAILERS:
            raise ProtocolError(self._status, f"{show(name)} is not allowed as a trailer")
        self.trailers.add(name, value)


def serialize_request(
    head: RequestHead, fields: Fields | None = None, version: bytes = b""
) -> bytes:
    """The wire form of a request head, to forward it.

    Args:
      fields: the header fields to write instead of ``head.headers`` (the forwarded ones).
      version: the version to write instead of ``head.version`` (a proxy speaks its own).

    Raises:
      ProtocolError: (status 500) a field, maybe set by a plugin, holds a CR or LF.
    """
    items = head.headers.items if fields is None else fields
    start = b"%s %s HTTP/%s" % (head.method, head.target, version or head.version)
    # One join, and map() runs b": ".join in C: no Python bytecode per field.
    out = b"\r\n".join([start, *map(b": ".join, items), b"", b""])
    _check_lines(out, len(items))
    return out


def serialize_response(
    head: ResponseHead, fields: Fields | None = None, version: bytes = b""
) -> bytes:
    """The wire form of a response head, to forward it; arguments as serialize_request's.

    Raises:
      ProtocolError: (status 500) a field, maybe set by a plugin, holds a CR or LF.
    """
    items = head.headers.items if fields is None else fields
    start = b"HTTP/%s %d %s" % (version or head.version, head.status, head.reason)
    out = b"\r\n".join([start, *map(b": ".join, items), b"", b""])
    _check_lines(out, len(items))
    return out


def _check_lines(out: bytes, fields: int) -> None:
    # One C-level pass instead of a check per field: the only CR and LF bytes must be
    # the CRLF ending each line (start line, fields, the empty line).
    if len(out) - len(out.translate(None, b"\r\n")) != 2 * (fields + 2):
        raise ProtocolError(500, "a header field or the start line holds a cr or lf")
