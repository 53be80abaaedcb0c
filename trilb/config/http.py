"""The HTTP parts of the config: an http frontend's keys, its routes, L7 balance kinds.

Owns validating what only ``mode = "http"`` uses: timeouts and limits of the client
side, ``[[frontends.NAME.routes]]`` (compiling each path_regex once, here), and the
``uri`` / ``header:NAME`` / ``cookie:NAME`` balance kinds. It does not match requests
(l7/router.py does, from the Route objects built here) and does not check that a route's
backend exists (config/load.py checks references once every table is read).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from trilb.config.plugins import parse_plugin_list
from trilb.config.schema import BALANCE_KINDS, BALANCE_PREFIXES, Route, WebSocket
from trilb.config.table import Table
from trilb.config.tls import parse_tls
from trilb.config.values import (
    parse_duration,
    parse_int,
    parse_name,
    parse_size,
    parse_size_limit,
    parse_timeout,
)
from trilb.errors import ConfigError

# Keys of a frontend that only one mode reads; the other mode names them in its error.
TCP_ONLY = ("idle_timeout", "splice")
HTTP_ONLY = (
    "routes",
    "header_timeout",
    "body_timeout",
    "keepalive_timeout",
    "max_request_line",
    "max_header_size",
    "max_headers",
    "max_concurrent_streams",
    "max_body_size",
    "tls",
    "websocket",
)

# The most HTTP/2 streams a frontend may allow at once (l7/http2.py sizes a connection's
# receive window from it).
MAX_H2_STREAMS = 128
# Why 1 GiB: a request line or header block that large is an attack, never a request;
# the cap only catches a unit typo ("8GiB" for "8KiB") before it becomes a memory bill.
_MAX_HEAD = 1 << 30
# RFC 9110 token: method and header names, cookie names (RFC 6265 cookie-name).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A host name (letters, digits, "-", "_", dots between labels) with an optional "*."
# first label, or an IP literal: IPv4 is a host name here, IPv6 comes in brackets.
_HOST = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
# What a path prefix may not hold: a query or fragment, whitespace, control characters.
_BAD_PATH = re.compile(r"[?#\s\x00-\x1f\x7f]")
# RFC 6265 cookie-octet: no controls, whitespace, DQUOTE, comma, semicolon, backslash.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
# A header value as a parser hands it over: no controls, no surrounding whitespace.
_HEADER_VALUE = re.compile(r"([^\x00-\x1f\x7f ]([^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x1f\x7f ])?)?")


def parse_http_keys(t: Table, base: str) -> None:
    """Take an http frontend's own keys from ``t`` into ``t.values``; ``base``: the
    directory relative file names start from.

    Raises:
      ConfigError: a key has the wrong type or range; a route is invalid.
    """
    t.take("routes", parse_routes)
    t.take("header_timeout", parse_timeout)
    t.take("body_timeout", parse_timeout)
    t.take("keepalive_timeout", parse_timeout)
    t.take("max_request_line", parse_size_limit(16, _MAX_HEAD))
    t.take("max_header_size", parse_size_limit(64, _MAX_HEAD))
    t.take("max_headers", parse_int(1, 100_000))
    t.take("max_concurrent_streams", parse_int(1, MAX_H2_STREAMS))
    t.take("max_body_size", parse_size)
    t.take("tls", lambda v, p: parse_tls(v, p, base))
    t.take("websocket", parse_websocket)
    t.take("plugins", parse_plugin_list)


def parse_websocket(value: object, path: str) -> WebSocket:
    """A frontend's ``websocket`` table.

    Raises:
      ConfigError: a key is unknown or of the wrong type or range.
    """
    t = Table(value, path)
    t.take("idle_timeout", parse_timeout)
    t.take("max_message_size", parse_size)
    t.take("ping_interval", parse_duration)
    return t.build(WebSocket)


def parse_balance(value: object, path: str) -> str:
    """A backend's ``balance``: one of BALANCE_KINDS, "header:NAME" or "cookie:NAME".

    A header NAME is lowercased (header names are case-insensitive); a cookie NAME is
    kept as written (cookie names are not).
    """
    if isinstance(value, str) and value.startswith(BALANCE_PREFIXES):
        prefix, _, name = value.partition(":")
        if not _TOKEN.fullmatch(name):
            raise ConfigError(path, f'expected "{prefix}:NAME" with a {prefix} name, got {value!r}')
        return f"{prefix}:{name.lower()}" if prefix == "header" else value
    if isinstance(value, str) and value in BALANCE_KINDS:
        return value
    kinds = " | ".join([*BALANCE_KINDS, "header:NAME", "cookie:NAME"])
    raise ConfigError(path, f"expected {kinds}, got {value!r}")


def parse_routes(value: object, path: str) -> tuple[Route, ...]:
    """``routes``: an array of tables, in order (the first match wins)."""
    if not isinstance(value, list):
        raise ConfigError(path, f"expected an array of tables ([[{path}]]), got {value!r}")
    return tuple(_route(v, f"{path}[{i}]", i) for i, v in enumerate(value))


def _route(value: object, path: str, index: int) -> Route:
    t = Table(value, path)
    backend = t.take("backend", parse_name)
    if backend is None:
        raise ConfigError(t.key("backend"), "required: the name of a backend")
    t.take("host", _host)
    t.take("path_prefix", _path_prefix)
    t.take("path_regex", _regex)
    t.take("method", _methods)
    t.take("header", _pairs(_header_name, _header_value, "header"))
    t.take("cookie", _pairs(_cookie_name, _cookie_value, "cookie"))
    t.take("query", _pairs(parse_name, _text, "query argument"))
    t.take("plugins", parse_plugin_list)
    renames = {"method": "methods", "header": "headers", "cookie": "cookies"}
    for key, field in renames.items():
        if key in t.values:
            t.values[field] = t.values.pop(key)
    return t.build(Route, index=index)


def _host(value: object, path: str) -> str:
    if isinstance(value, str):
        host = value.lower().removesuffix(".")
        if _HOST.fullmatch(host):
            return host
    raise ConfigError(
        path,
        f'expected a host name such as "api.example.com" or "*.example.com" (no port), '
        f"got {value!r}",
    )


def _path_prefix(value: object, path: str) -> str:
    # Non-ASCII text is allowed: l7/router.py percent-encodes it as UTF-8, as clients do.
    if isinstance(value, str) and value.startswith("/") and not _BAD_PATH.search(value):
        return value
    raise ConfigError(
        path, f'expected a path starting with "/" (no query, no spaces), got {value!r}'
    )


def _regex(value: object, path: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a regular expression (a string), got {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ConfigError(path, f"invalid regular expression {value!r}: {exc.msg}{where}") from None


def _methods(value: object, path: str) -> tuple[str, ...]:
    if value == []:
        raise ConfigError(path, "expected a method or a non-empty list of them, got []")
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if not isinstance(item, str) or not _TOKEN.fullmatch(item):
            raise ConfigError(
                where, f'expected a method such as "GET" or a non-empty list, got {item!r}'
            )
        if item.upper() not in out:
            out.append(item.upper())
    return tuple(out)


def _pairs(
    name: Callable[[object, str], str], value: Callable[[object, str], str], what: str
) -> Callable[[object, str], tuple[tuple[str, str], ...]]:
    """A parser of ``{NAME = "value", ...}`` tables; duplicate NAMEs after name() fail."""

    def parse(raw: object, path: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(raw, dict):
            raise ConfigError(path, f'expected a table {{NAME = "value"}}, got {raw!r}')
        out: dict[str, str] = {}
        for key, v in raw.items():
            key_path = f"{path}.{_quote_key(key)}"
            n = name(key, key_path)
            if n in out:
                raise ConfigError(key_path, f'duplicate {what} name "{n}"')
            out[n] = value(v, key_path)
        return tuple(out.items())

    return parse


def _quote_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _header_name(value: object, path: str) -> str:
    if isinstance(value, str) and _TOKEN.fullmatch(value):
        return value.lower()
    raise ConfigError(path, f"expected a header name (an HTTP token), got {value!r}")


def _cookie_name(value: object, path: str) -> str:
    if isinstance(value, str) and _TOKEN.fullmatch(value):
        return value
    raise ConfigError(path, f"expected a cookie name (an HTTP token), got {value!r}")


def _text(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {value!r}")
    return value


def _header_value(value: object, path: str) -> str:
    if isinstance(value, str) and _HEADER_VALUE.fullmatch(value):
        return value
    raise ConfigError(
        path,
        "expected a header value (no control characters, no leading or trailing space), "
        f"got {value!r}",
    )


def _cookie_value(value: object, path: str) -> str:
    if isinstance(value, str) and _COOKIE_VALUE.fullmatch(value):
        return value
    raise ConfigError(
        path, f"expected a cookie value (no space, quote, comma, semicolon), got {value!r}"
    )
