"""The parts of an HTTP request that balancing and routing read: target, cookies, query.

Owns splitting a request target into authority, path and query, reading cookies from
the Cookie fields and arguments from a query string, and the balancer key of the
``uri``, ``header:NAME`` and ``cookie:NAME`` kinds. It lives under balance/ so that
l7/ (router, proxy) can share it and balance/ needs nothing from l7/. It does not
choose a server (balance/algorithms.py) or a route (l7/router.py). Pure: bytes in,
bytes out, no trio, no I/O; any input bytes are accepted without raising.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import unquote_to_bytes

from trilb.messages import Headers, RequestHead

KeyFunction = Callable[[RequestHead], bytes | None]

_OWS = b" \t"


def split_target(target: bytes) -> tuple[bytes | None, bytes, bytes | None]:
    """Split a request target into (authority, path, query).

    Origin-form ("/a?b") gives (None, b"/a", b"b"); absolute-form
    ("http://h:1/a?b", RFC 9112 section 3.2.2) gives (b"h:1", b"/a", b"b"), with "/" for
    an empty path. Authority-form (CONNECT) and asterisk-form ("*") come back whole as the
    path. A fragment, which clients must not send, is dropped. The query is None when
    there is no "?", b"" for a bare "?".
    """
    authority: bytes | None = None
    if target[:1] != b"/":
        scheme_end = target.find(b"://")
        if scheme_end > 0 and target[:scheme_end].isalpha():
            rest = target[scheme_end + 3 :]
            end = len(rest)
            for stop in (b"/", b"?", b"#"):
                at = rest.find(stop, 0, end)
                if at >= 0:
                    end = at
            authority = rest[:end].rpartition(b"@")[2]
            target = rest[end:]
            if target[:1] != b"/":
                target = b"/" + target
    hash_at = target.find(b"#")
    if hash_at >= 0:
        target = target[:hash_at]
    path, sep, query = target.partition(b"?")
    return authority, path, query if sep else None


def iter_cookies(headers: Headers) -> Iterator[tuple[bytes, bytes]]:
    """(name, value) of every cookie in every Cookie field, in order (RFC 6265 5.4).

    HTTP/2 clients split cookies over several fields, so all of them are read. Values
    are as sent (a quoted value keeps its quotes); pairs without "=" are skipped.
    """
    for field, line in headers.items:
        if field != b"cookie":
            continue
        for part in line.split(b";"):
            name, sep, value = part.partition(b"=")
            name = name.strip(_OWS)
            if sep and name:
                yield name, value.strip(_OWS)


def iter_query(query: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(name, value) of every "&"-separated argument, "+" and %XX decoded to bytes.

    Like urllib.parse.parse_qsl with keep_blank_values (an argument without "=" has the
    value b""), but on bytes, so that any input decodes and nothing raises.
    """
    for part in query.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            yield _unquote_plus(name), _unquote_plus(value)


def _unquote_plus(text: bytes) -> bytes:
    if b"+" in text:
        text = text.replace(b"+", b" ")
    if b"%" in text:
        return unquote_to_bytes(text)
    return text


def first_cookie(headers: Headers, name: bytes) -> bytes | None:
    """The value of the first cookie called ``name`` (case-sensitive), or None."""
    for n, v in iter_cookies(headers):
        if n == name:
            return v
    return None


def uri_key(head: RequestHead) -> bytes:
    """The key of ``balance = "uri"``: the path as sent, without the query string.

    As HAProxy's ``balance uri`` by default: "/img?id=1" and "/img?id=2" go to the same
    server, which is what a cache in front of a path wants.
    """
    return split_target(head.target)[1]


def key_function(kind: str) -> KeyFunction | None:
    """The request-key extractor for a backend's ``balance`` kind, built once per backend.

    Args:
      kind: a validated balance kind (config/http.py lowercases header names).

    Returns:
      For "uri", "header:NAME" and "cookie:NAME", a function returning the key bytes of
      a request, or None when the header or cookie is absent (the balancer then falls
      back to round-robin); for every other kind None (they hash no request field).
    """
    if kind == "uri":
        return uri_key
    prefix, _, name = kind.partition(":")
    if not name:
        return None
    if prefix == "header":
        field = name.lower().encode("latin-1")
        return lambda head: head.headers.get(field)
    if prefix == "cookie":
        cookie = name.encode("latin-1")
        return lambda head: first_cookie(head.headers, cookie)
    return None


def request_key(head: RequestHead, kind: str) -> bytes | None:
    """The balancer key of one request for ``kind``; see key_function, which a hot path
    should call once and keep."""
    extract = key_function(kind)
    return extract(head) if extract is not None else None
