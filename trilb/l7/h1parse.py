"""The machinery under the HTTP/1.1 parsers of http1: llhttp plumbing and field rules.

Owns finding where a head ends, feeding it to llhttp (httptools), the size limits, and the
rules llhttp does not apply (framing fields, Host, Connection, Expect, request targets).
The public parsers, RequestParser and ResponseParser, live in http1 and build the heads;
this module does no I/O, never sees a body and builds no head itself.
"""

# Theory of operation
#
# llhttp parses the head; Python adds only what llhttp leaves lenient, and the framing.
# Probing llhttp 9 in its default strict mode (httptools 0.9 turns no leniency on) showed
# it already rejects: Content-Length with Transfer-Encoding, any second Content-Length,
# non-digit or overflowing lengths, a request Transfer-Encoding whose final coding is not
# chunked, bare LF and bare CR line endings, obs-fold, whitespace before the colon,
# control characters and NUL in names and values, unknown or malformed methods. It
# accepts, and this module rejects: "gzip, chunked" or ",chunked", two Transfer-Encoding
# fields, Transfer-Encoding on HTTP/1.0, versions 0.9 and 2.0 (and a request line with no
# version), RTSP/ICE protocol names, runs of spaces in the request line, "#" in a target,
# control characters in a reason phrase, status codes outside 100-599. It keeps trailing
# whitespace in values; that is stripped here. Host, Expect, absolute-form targets and the
# size limits are HTTP semantics llhttp does not know.
#
# httptools can neither pause llhttp nor say where in a buffer a message ended (only an
# upgrade reports an offset). So the end of the head is found here first: the first
# CRLF CRLF, which in a strict head is its end (values hold no CR or LF), and only the
# bytes up to it are fed to llhttp, which must report the head complete exactly there.
# Bytes of an incomplete head are fed as they arrive, so malformed heads fail early.
# What follows the head is `leftover`: the body, or the next pipelined message.
#
# llhttp never sees a body, so after a head that announces one it is left mid-message and
# a fresh httptools parser is made for the next message (0.35 us, the same as re-running
# __init__ on the old one). A bodiless keep-alive message, most GETs, leaves llhttp
# ready for the next head, and the parser is reused as it is.

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from typing import ClassVar, Final

import httptools

from trilb.errors import ProtocolError
from trilb.messages import Framing

Fields = list[tuple[bytes, bytes]]

# RFC 9110 tchar: what methods, header names and transfer codings are made of.
TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# What a Host value may hold (reg-name or IP literal, port, percent escapes). Anything else,
# such as "/", "@" or a space, could make routing and the backend see different hosts.
HOST_CHARS: Final = (
    b"-._~!$&'()*+,;=:%[]0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
# Control characters except HTAB; llhttp lets them through in a reason phrase.
CTL_RE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A complete, well-formed version at the end of a request line (only used on errors).
VERSION_RE: Final = re.compile(rb" HTTP/(\d\.\d)$")
# The fields the scan looks at; a set test keeps the loop cheap for all other fields.
FRAMING_FIELDS: Final = frozenset(
    (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade")
)
# What scan_fields looks at: those, and the fields a proxy rewrites or drops.
SCANNED_FIELDS: Final = FRAMING_FIELDS | frozenset(
    (b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
     b"te", b"trailer", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via")
)  # fmt: skip
# Connection values that name no field beyond the hop-by-hop ones (what clients and
# servers send): a head that carries one needs no Connection token parsing.
PLAIN_CONNECTION: Final = frozenset(
    (b"keep-alive", b"close", b"Keep-Alive", b"Close", b"upgrade", b"Upgrade")
)
# The versions trilb speaks, by their protocol token; the values are the ones heads carry.
VERSIONS: Final = {b"HTTP/1.1": b"1.1", b"HTTP/1.0": b"1.0"}
# Connection tokens of the common cases, to skip splitting the value.
NO_TOKENS: Final[frozenset[bytes]] = frozenset()
KEEP_ALIVE: Final = frozenset((b"keep-alive",))
CLOSE: Final = frozenset((b"close",))
BAD_NAME: Final = "invalid character in a header name (whitespace before the colon?)"
_CL_AND_TE: Final = "both content-length and transfer-encoding"
# The few llhttp reasons worth rewording for an operator; others are passed on lowercased.
LLHTTP_REASONS: Final = {
    "Missing expected CR after header value": "bare lf line ending in the header block",
    "Missing expected LF after header value": "bare cr in the header block",
    "Expected CRLF after version": "request line not ended by crlf",
    "Missing expected CR after response line": "status line not ended by crlf",
    "Unexpected whitespace after header value": "obs-fold or a field line starting with whitespace",
    "Invalid header token": BAD_NAME,
    "Invalid header field char": BAD_NAME,
    "Invalid header value char": "control character in a header value",
    "Duplicate Content-Length": "duplicate content-length",
    "Transfer-Encoding can't be present with Content-Length": _CL_AND_TE,
    "Content-Length can't be present with Transfer-Encoding": _CL_AND_TE,
    "Invalid character in Content-Length": "content-length is not a decimal number",
    "Request has invalid `Transfer-Encoding`": "transfer-encoding does not end with chunked",
    "Invalid `Transfer-Encoding` header value": "transfer-encoding is not exactly chunked",
}


def show(value: bytes | bytearray, limit: int = 80) -> str:
    """A wire value for an error message: latin-1, quoted, cut at ``limit`` bytes."""
    text = bytes(value[:limit]).decode("latin-1")
    return repr(text + "...") if len(value) > limit else repr(text)


class HeadParser:
    """The head-finding and llhttp plumbing shared by the request and response parsers."""

    __slots__ = (
        "_buf",
        "_done",
        "_fields",
        "_line_end",
        "_ll",
        "_max_headers",
        "_max_headers_size",
        "_max_line",
        "_msg_done",
        "_raw",
        "_raw_end",
        "leftover",
    )
    _kind: ClassVar[str]  # "request" or "response", for messages
    _status: ClassVar[int]  # answered for a malformed head
    _line_status: ClassVar[int]  # answered for an over-long start line
    _size_status: ClassVar[int]  # answered for an over-large head

    def __init__(
        self, max_line: int = 8192, max_headers_size: int = 65536, max_headers: int = 100
    ) -> None:
        self._max_line = max_line
        self._max_headers_size = max_headers_size
        self._max_headers = max_headers
        self._buf = bytearray()
        self._fields: Fields = []
        self._line_end = -1
        self._done = False
        self._msg_done = False
        # After a head: the bytes that followed it (body, next message), owned by the caller.
        self.leftover = b""
        # After a head: the bytes it came in, and where in them it ended (its empty line).
        self._raw = b""
        self._raw_end = 0
        self._ll = self._new_llhttp()

    def _new_llhttp(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        raise NotImplementedError

    # llhttp callbacks. No on_url/on_status: the start line is sliced from the buffer,
    # which saves a Python call per message. on_header is RequestParser's only: llhttp
    # calls it for every field when the protocol has it (httptools looks once), and a
    # response's fields are split from its head only if someone asks (split_fields).
    # on_message_complete is ResponseParser's only: a request llhttp may be reused after
    # (keep-alive, no body, no upgrade) is complete at the end of its head.
    def on_headers_complete(self) -> None:
        self._done = True

    def _take(self, data: bytes) -> bytes | None:
        """Consume ``data``; once the head is complete, return its start line."""
        if self._buf:
            return self._take_more(data)
        if data[:1] == b"\r":  # RFC 9112 2.2: ignore empty lines before a message
            data = data[empty_lines(data) :]
        end = data.find(b"\r\n\r\n") + 4
        if end < 4:
            return self._take_more(data)
        line_end = data.find(b"\r\n")
        if line_end > self._max_line or end > self._max_headers_size:
            self._check_size(line_end, end)
        try:  # _execute, inlined on the per-request path
            self._ll.feed_data(data if end == len(data) else memoryview(data)[:end])
        except httptools.HttpParserUpgrade:
            pass  # llhttp stops after an upgrade head; the head itself is whole
        except httptools.HttpParserError as exc:
            raise self._llhttp_error(exc, data) from exc
        if not self._done:
            raise self._error("does not end at its first empty line", data)
        self.leftover = data[end:]
        self._raw = data
        self._raw_end = end
        return data[:line_end]

    def _take_more(self, data: bytes) -> bytes | None:
        buf = self._buf
        start = max(0, len(buf) - 3)
        buf += data
        if self._line_end < 0 and buf[:1] == b"\r":  # empty lines split across reads
            skip = empty_lines(buf)
            del buf[:skip]
            start = 0
        base = len(buf) - len(data)  # where data starts in buf; < 0 if its start was skipped
        if self._line_end < 0:
            self._line_end = buf.find(b"\r\n", max(0, base - 1))
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            self._check_size(self._line_end, len(buf))
            self._execute(data, False, buf)
            return None
        end += 4
        self._check_size(self._line_end, end)
        head = bytes(buf[:end])
        self._execute(data[: end - base], True, head)
        self.leftover = data[end - base :]
        buf.clear()
        self._line_end = -1
        self._raw = head
        self._raw_end = end
        return head[: head.find(b"\r\n")]

    def _check_size(self, line_end: int, size: int) -> None:
        # + 1: a line of max_line bytes whose CR has come but not yet its LF.
        if line_end > self._max_line or (line_end < 0 and size > self._max_line + 1):
            raise ProtocolError(
                self._line_status, f"{self._kind} line longer than {self._max_line} bytes"
            )
        if size > self._max_headers_size:
            raise ProtocolError(
                self._size_status, f"{self._kind} head larger than {self._max_headers_size} bytes"
            )

    def _execute(self, chunk: bytes | memoryview, last: bool, source: bytes | bytearray) -> None:
        try:
            self._ll.feed_data(chunk)
        except httptools.HttpParserUpgrade:
            pass  # llhttp stops after an upgrade head; the head itself is whole
        except httptools.HttpParserError as exc:
            raise self._llhttp_error(exc, source) from exc
        if self._done is not last:
            wrong = "ends before" if self._done else "does not end at"
            raise self._error(f"{wrong} its first empty line", source)

    def _execute_body(self, body: bytes | memoryview) -> None:
        """Feed a whole body to llhttp (it only counts its bytes): the message ends."""
        try:
            self._ll.feed_data(body)
        except httptools.HttpParserError:
            self._msg_done = False  # a fresh llhttp is made for the next message

    def _llhttp_error(self, exc: Exception, source: bytes | bytearray) -> ProtocolError:
        reason = str(exc)
        return self._error(LLHTTP_REASONS.get(reason, reason.lower()), source)

    def _error(self, reason: str, source: bytes | bytearray) -> ProtocolError:
        """The error for a head llhttp refused; ``source`` holds the head's start."""
        return ProtocolError(self._status, f"invalid {self._kind} head: {reason}")

    def _take_fields(self) -> Fields:
        fields = self._fields
        self._fields = []
        if len(fields) > self._max_headers:
            raise ProtocolError(
                self._size_status,
                f"{self._kind} has {len(fields)} header fields, more than {self._max_headers}",
            )
        return fields

    def close(self) -> None:
        """Drop the llhttp parser. It refers back to this object (its callbacks), so
        the pair would wait for the garbage collector; feed nothing after this."""
        self._ll = _CLOSED

    def _next_message(self, reuse: bool) -> None:
        """Ready for the next head; ``reuse``: the llhttp parser ended its message."""
        if not reuse:
            self._ll = self._new_llhttp()
        self._done = self._msg_done = False


class _Closed:
    """What a closed parser feeds: a bug, never a silent success."""

    def feed_data(self, data: object) -> None:
        raise RuntimeError("feed after close")


_CLOSED: httptools.HttpRequestParser = _Closed()  # type: ignore[assignment]


def split_fields(head: bytes) -> Fields:
    """The fields of a head llhttp has accepted: ``head`` is its start line and fields,
    each line ending CRLF. Names lowercased; values without the whitespace around them
    (what llhttp's callbacks give, once trailing whitespace is stripped)."""
    fields = []
    for line in head.split(b"\r\n")[1:-1]:
        name, _, value = line.partition(b":")
        fields.append((name.lower(), value.strip(b" \t")))
    return fields


def empty_lines(data: bytes | bytearray) -> int:
    """How many bytes of empty lines (CRLF pairs) ``data`` starts with."""
    i = 0
    while data.startswith(b"\r\n", i):
        i += 2
    return i


def start_line(source: bytes | bytearray) -> bytes:
    """The start line at the head of ``source``, as far as it has come."""
    start = empty_lines(source)
    end = source.find(b"\r\n", start)
    return bytes(source[start : end if end >= 0 else len(source)])


def request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """Method, target and version ("1.1" or "1.0") of a request line llhttp has accepted."""
    # llhttp has checked the method, target and version syntax but allows runs of spaces.
    parts = line.split(b" ")
    version = VERSIONS.get(parts[-1]) if len(parts) == 3 else None
    if version is None:
        raise request_line_error(line)
    if parts[0] == b"CONNECT":  # a reverse proxy opens no tunnels for clients
        raise ProtocolError(501, "method 'CONNECT' is not implemented")
    return parts[0], parts[1], version


def request_line_error(line: bytes) -> ProtocolError:
    if line.count(b" ") != 2:
        return ProtocolError(400, f"request line parts not split by single spaces: {show(line)}")
    match = VERSION_RE.search(line)
    if match is None:
        return ProtocolError(400, f"request line has no http version: {show(line)}")
    return ProtocolError(505, f"http version {show(match[1])} is not supported")


ScanResult = tuple[
    bytes | None, bytes | None, int, bytes | None, bytes | None, bytes | None, bytes | None, bool
]


def scan_fields(fields: Fields, status: int) -> ScanResult:
    """One pass over a request's fields; duplicate framing fields are refused.

    Returns Content-Length, Transfer-Encoding, the Host count and value, Connection,
    Expect, Upgrade, and whether a field a proxy rewrites or drops besides those is
    there (X-Forwarded-*, Via, Keep-Alive, TE, Trailer, Proxy-*). A tuple, not an
    object: this runs once per request.
    """
    cl = te = host = conn = expect = upgrade = None
    hosts = 0
    others = False
    for name, value in fields:
        if name not in SCANNED_FIELDS:
            continue
        if name == b"host":
            hosts += 1
            host = value
        elif name == b"content-length":
            # llhttp rejects this already; kept as the one place that states the rule.
            # Even equal duplicates are refused: RFC 9112 6.3 lets a recipient merge them,
            # but a next hop that does not, or that splits "5, 5" differently, would frame
            # the body otherwise, and trilb forwards what it read.
            if cl is not None:
                raise ProtocolError(status, f"duplicate content-length {show(cl)}, {show(value)}")
            cl = value
        elif name == b"transfer-encoding":
            if te is not None:
                raise ProtocolError(status, "more than one transfer-encoding field")
            te = value
        elif name == b"connection":
            conn = value if conn is None else conn + b"," + value
        elif name == b"expect":
            expect = value if expect is None else expect + b"," + value
        elif name == b"upgrade":
            upgrade = value
        else:
            others = True
    return cl, te, hosts, host, conn, expect, upgrade, others


def content_length(value: bytes, status: int) -> int:
    if not value.isdigit():  # ASCII digits only, no sign, space or underscore
        raise ProtocolError(status, f"invalid content-length {show(value)}")
    return int(value)


def request_framing(cl: bytes | None, te: bytes | None, http11: bool) -> tuple[Framing, int | None]:
    if te is not None:
        if not http11:  # RFC 9112 6.1: framing of such a message is faulty
            raise ProtocolError(400, "transfer-encoding in an http/1.0 request")
        if te.lower() != b"chunked":
            codings = [c.strip() for c in te.lower().split(b",")]
            if codings[-1] == b"chunked" and b"chunked" not in codings[:-1] and all(codings):
                # Well framed, but RFC 9112 6.1: a transfer coding the server does not
                # understand is 501; trilb relays bodies unchanged and knows chunked only.
                raise ProtocolError(501, f"transfer-encoding {show(te)} is not supported")
            # RFC 9112 6.3: without one final chunked the body length is unknown: 400.
            raise ProtocolError(400, f"transfer-encoding {show(te)} is not one final chunked")
        return Framing.CHUNKED, None
    if cl is not None:
        length = content_length(cl, 400)
        return (Framing.LENGTH if length else Framing.NONE), length
    return Framing.NONE, None


def connection(conn: bytes | None, http11: bool) -> tuple[bool, AbstractSet[bytes]]:
    """Whether the connection stays open, and the Connection tokens (lowercased)."""
    if conn is None:
        return http11, NO_TOKENS
    if conn == b"keep-alive":
        return True, KEEP_ALIVE
    if conn == b"close":
        return False, CLOSE
    tokens = {t.strip() for t in conn.lower().split(b",")}
    return b"close" not in tokens and (http11 or b"keep-alive" in tokens), tokens


def expect_continue(value: bytes, http11: bool) -> bool:
    if value.strip().lower() != b"100-continue":
        raise ProtocolError(417, f"unsupported expectation {show(value)}")
    return http11  # RFC 9110 10.1.1: ignore 100-continue from an HTTP/1.0 client


def check_target(method: bytes, target: bytes, host: bytes | None) -> None:
    """Check an asterisk-form or absolute-form target (origin-form needs no check)."""
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError(400, f"target '*' with method {show(method)}, not OPTIONS")
        return
    sep = target.find(b"://")
    scheme = target[:sep].lower() if sep > 0 else b""
    if scheme not in (b"http", b"https"):
        raise ProtocolError(400, f"request target is not a path or http url: {show(target)}")
    rest = target[sep + 3 :]
    end = len(rest)
    for stop in (b"/", b"?"):
        at = rest.find(stop)
        if 0 <= at < end:
            end = at
    authority = rest[:end]
    if not authority or b"@" in authority:
        raise ProtocolError(400, f"request target has no host or has userinfo: {show(target)}")
    if host is None:  # HTTP/1.0: the target alone names the host
        return
    port = b":80" if scheme == b"http" else b":443"
    if origin(authority, port) != origin(host, port):
        raise ProtocolError(
            400, f"request target host {show(authority)} differs from host header {show(host)}"
        )


def origin(host: bytes, default_port: bytes) -> bytes:
    host = host.lower()
    return host[: -len(default_port)] if host.endswith(default_port) else host
