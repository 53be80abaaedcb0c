"""Choosing a route (and so a backend) for an HTTP request head: first match wins.

Owns compiling a frontend's configured routes into byte-level rules once, when a worker
builds its state from a Config, and matching a RequestHead against them. It does not
validate routes (config/http.py did, and compiled each path_regex there), pick a server
(balance/), or touch the request. Pure: no trio, no I/O; any head, even one a strict
parser would have refused, is matched without raising.

Theory of operation
-------------------
Matching costs a few byte comparisons per route for the common conditions: methods,
hosts, prefixes, header names and values are turned into bytes (lowercased where the
protocol is case-insensitive) at compile time, and each rule checks its cheap
conditions first. Everything derived from the request (host without port, normalized
path, cookies, query arguments) is computed at most once per request, and only when a
rule that needs it is reached: a request that matches on its host never has its cookies
or query string parsed.

Host: the authority of an absolute-form target when there is one (RFC 9112 section
3.2.2: it overrides Host), else the first Host field; lowercased, without a port or
a final dot. "*.example.com" matches one or more labels before ".example.com"
("a.example.com", "a.b.example.com") but not "example.com" itself, as a TLS wildcard
would not (HAProxy's `hdr_end(host)` would also take "badexample.com"; a suffix on
".example.com" never does).

Path: conditions see the path without query or fragment, normalized as RFC 3986
section 6.2.2 allows without changing what it names: escapes of unreserved characters
decoded ("%61" is "a"), other escapes in uppercase hex, "." and ".." segments resolved.
So "/%61dmin" and "/x/../admin" both match `path_prefix = "/admin"`, as the many
backends that normalize will read them; nginx matches locations on a normalized path
too, HAProxy's path_beg does not. The request is forwarded as received.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

from trilb.balance.keys import iter_cookies, iter_query, split_target
from trilb.config.schema import Route
from trilb.messages import RequestHead

# RFC 3986 unreserved characters: the only ones whose escapes decode without changing
# what a URI names.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# What quote() leaves alone in a configured prefix: RFC 3986 pchar, "/" and "%" (so a
# prefix written with escapes keeps them); everything else becomes UTF-8 escapes.
_PREFIX_SAFE = "/%!$&'()*+,;=:@"


def _normalize_escape(m: re.Match[bytes]) -> bytes:
    byte = int(m.group(1), 16)
    return bytes((byte,)) if byte in _UNRESERVED else b"%" + m.group(1).upper()


def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4 for an absolute path ("/a/b/../c" is "/a/c")."""
    segments = path.split(b"/")
    out: list[bytes] = []
    for segment in segments[1:]:
        if segment == b"..":
            if out:
                out.pop()
        elif segment != b".":
            out.append(segment)
    result = b"/" + b"/".join(out)
    if segments[-1] in (b".", b"..") and not result.endswith(b"/"):
        result += b"/"
    return result


def normalize_path(path: bytes) -> bytes:
    """The path routes compare with (see the module's theory of operation)."""
    if path[:1] != b"/":
        return path  # "*" or a CONNECT authority: nothing to normalize
    if b"%" in path:
        path = _ESCAPE.sub(_normalize_escape, path)
    if b"/." in path:
        path = _remove_dot_segments(path)
    return path


def host_name(raw: bytes) -> bytes:
    """A Host value or authority as routes compare it: lowercase, no port, no final dot."""
    host = raw.strip(b" \t").lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    name, sep, _port = host.rpartition(b":")
    if sep and b":" not in name:
        host = name
    return host[:-1] if host.endswith(b".") else host


class _Request:
    """One request's derived values, each computed on first use."""

    __slots__ = ("_authority", "_cookies", "_host", "_path", "_query", "_raw_query", "_text")

    def __init__(self, head: RequestHead) -> None:
        self._authority, path, self._raw_query = split_target(head.target)
        # The path is split eagerly (every path rule needs it) and normalized lazily.
        self._path: bytes = path
        self._text: str | None = None
        self._host: bytes | None = None
        self._cookies: frozenset[tuple[bytes, bytes]] | None = None
        self._query: frozenset[tuple[bytes, bytes]] | None = None

    def host(self, head: RequestHead) -> bytes:
        if self._host is None:
            raw = self._authority if self._authority is not None else head.headers.get(b"host")
            self._host = host_name(raw) if raw else b""
        return self._host

    def path(self) -> bytes:
        if self._text is None:
            self._path = normalize_path(self._path)
            # latin-1 maps every byte to one character, so a regex never fails to decode.
            self._text = self._path.decode("latin-1")
        return self._path

    def path_text(self) -> str:
        self.path()
        assert self._text is not None
        return self._text

    def cookies(self, head: RequestHead) -> frozenset[tuple[bytes, bytes]]:
        if self._cookies is None:
            self._cookies = frozenset(iter_cookies(head.headers))
        return self._cookies

    def query(self) -> frozenset[tuple[bytes, bytes]]:
        if self._query is None:
            raw = self._raw_query
            self._query = frozenset(iter_query(raw)) if raw else frozenset()
        return self._query


def _utf8_pairs(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.encode(), value.encode()) for name, value in pairs)


class _Rule:
    """One route, with its conditions as the bytes a request is compared with."""

    __slots__ = (
        "cookies",
        "headers",
        "host",
        "methods",
        "prefix",
        "query",
        "regex",
        "route",
        "suffix",
    )

    def __init__(self, route: Route) -> None:
        self.route = route
        self.methods = frozenset(m.encode() for m in route.methods) or None
        self.host: bytes | None = None
        self.suffix: bytes | None = None  # ".example.com" for "*.example.com"
        if route.host is not None:
            host = route.host.lower().encode()
            if host.startswith(b"*."):
                self.suffix = host[1:]
            else:
                self.host = host
        self.prefix: bytes | None = None
        if route.path_prefix is not None:
            self.prefix = normalize_path(quote(route.path_prefix, safe=_PREFIX_SAFE).encode())
        self.regex = route.path_regex
        # Header values are compared exactly, as bytes; non-ASCII text is sent as UTF-8.
        self.headers = _utf8_pairs(route.headers)
        self.cookies = _utf8_pairs(route.cookies)
        self.query = _utf8_pairs(route.query)

    def matches(self, head: RequestHead, req: _Request) -> bool:
        if self.methods is not None and head.method not in self.methods:
            return False
        if self.host is not None and req.host(head) != self.host:
            return False
        if self.suffix is not None:
            host = req.host(head)
            if len(host) <= len(self.suffix) or not host.endswith(self.suffix):
                return False
        if self.prefix is not None and not req.path().startswith(self.prefix):
            return False
        if self.headers:
            fields = head.headers.items
            for wanted in self.headers:
                if wanted not in fields:
                    return False
        if self.regex is not None and self.regex.search(req.path_text()) is None:
            return False
        if self.cookies:
            cookies = req.cookies(head)
            if not all(pair in cookies for pair in self.cookies):
                return False
        if self.query:
            args = req.query()
            if not all(pair in args for pair in self.query):
                return False
        return True


class Router:
    """A frontend's routes, compiled; see the module docstring for the match rules.

    Build it with Router.compile once per frontend and Config; match() is then
    synchronous, allocation-light, and never raises.
    """

    __slots__ = ("_rules", "default")

    def __init__(self, rules: Sequence[_Rule], default: Route) -> None:
        self._rules = tuple(rules)
        # What match() returns when no route matches: index -1, the default_backend.
        self.default = default

    @classmethod
    def compile(cls, routes: Sequence[Route], default_backend: str) -> Router:
        """Compile ``routes`` (in order: the first match wins).

        Args:
          routes: a frontend's Route objects, as config/load.py built them.
          default_backend: the backend of requests no route matches.

        Returns:
          A Router whose match() returns one of ``routes`` or its ``default`` route.
        """
        return cls([_Rule(r) for r in routes], Route(backend=default_backend))

    def match(self, head: RequestHead) -> Route:
        """The first route whose every condition holds for ``head``, else the default.

        Args:
          head: the request head; header names must be lowercase bytes, as the parsers
            produce them.

        Returns:
          The matched Route (its ``backend`` names the backend), or ``self.default``.
        """
        rules = self._rules
        if not rules:
            return self.default
        req = _Request(head)
        for rule in rules:
            if rule.matches(head, req):
                return rule.route
        return self.default
