"""Routing a request head: every match field, first match wins, else the default backend."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trilb.l7.router as router_module
from trilb.balance import keys
from trilb.config.schema import Route
from trilb.l7.router import Router, host_name, normalize_path
from trilb.messages import Headers, RequestHead

T = TypeVar("T")


def head(
    target: bytes = b"/", method: bytes = b"GET", host: bytes | None = b"example.com", **more: bytes
) -> RequestHead:
    """A request head; keyword arguments add header fields (``x_user=`` is x-user)."""
    fields = [(b"host", host)] if host is not None else []
    fields += [(name.replace("_", "-").encode(), value) for name, value in more.items()]
    return RequestHead(method=method, target=target, headers=Headers(fields))


def with_fields(fields: list[tuple[bytes, bytes]], target: bytes = b"/") -> RequestHead:
    return RequestHead(method=b"GET", target=target, headers=Headers(fields))


def route(**conditions: object) -> Route:
    return Route(backend="hit", index=0, **conditions)  # type: ignore[arg-type]  # test shorthand


def backend(routes: list[Route], req: RequestHead) -> str:
    return Router.compile(routes, "default").match(req).backend


def hits(r: Route, req: RequestHead) -> bool:
    return backend([r], req) == "hit"


# -- each field ------------------------------------------------------------------

CASES = [
    # host: exact, case-insensitive, port and final dot ignored
    ("exact host", route(host="api.example.com"), head(host=b"api.example.com"), True),
    ("host case", route(host="api.example.com"), head(host=b"API.Example.COM"), True),
    ("host port", route(host="api.example.com"), head(host=b"api.example.com:8080"), True),
    ("host final dot", route(host="api.example.com"), head(host=b"api.example.com."), True),
    ("host other", route(host="api.example.com"), head(host=b"www.example.com"), False),
    ("host longer", route(host="api.example.com"), head(host=b"api.example.com.evil"), False),
    ("no host", route(host="api.example.com"), head(host=None), False),
    ("empty host", route(host="api.example.com"), head(host=b""), False),
    ("v6 host", route(host="[::1]"), head(host=b"[::1]:8080"), True),
    ("v4 host", route(host="127.0.0.1"), head(host=b"127.0.0.1:80"), True),
    # wildcard: one or more labels before the suffix, never the bare domain
    ("wild one", route(host="*.example.com"), head(host=b"a.example.com"), True),
    ("wild two", route(host="*.example.com"), head(host=b"a.b.example.com:443"), True),
    ("wild case", route(host="*.example.com"), head(host=b"A.EXAMPLE.com"), True),
    ("wild bare", route(host="*.example.com"), head(host=b"example.com"), False),
    ("wild dot only", route(host="*.example.com"), head(host=b".example.com"), False),
    ("wild glued", route(host="*.example.com"), head(host=b"badexample.com"), False),
    ("wild other", route(host="*.example.com"), head(host=b"a.example.org"), False),
    # absolute-form target: its authority is the host (RFC 9112 3.2.2)
    (
        "absolute",
        route(host="api.example.com", path_prefix="/v1/"),
        head(b"http://API.example.com:80/v1/x?y", host=b"other.com"),
        True,
    ),
    (
        "absolute other",
        route(host="other.com"),
        head(b"http://api.example.com/", host=b"other.com"),
        False,
    ),
    # path_prefix: the path only, normalized
    ("prefix", route(path_prefix="/v1/"), head(b"/v1/users"), True),
    ("prefix exact", route(path_prefix="/v1/"), head(b"/v1/"), True),
    ("prefix short", route(path_prefix="/v1/"), head(b"/v1"), False),
    ("prefix bytes", route(path_prefix="/api"), head(b"/apix"), True),
    ("prefix case", route(path_prefix="/api"), head(b"/API"), False),
    ("prefix not in query", route(path_prefix="/v1"), head(b"/x?next=/v1"), False),
    ("prefix with query", route(path_prefix="/v1"), head(b"/v1?x=1"), True),
    ("prefix escape", route(path_prefix="/admin"), head(b"/%61dmin/x"), True),
    ("prefix dots", route(path_prefix="/admin"), head(b"/static/../admin"), True),
    ("prefix dot escape", route(path_prefix="/admin"), head(b"/a/%2e%2e/admin"), True),
    ("prefix slash escape", route(path_prefix="/a/b"), head(b"/a%2fb"), False),
    ("prefix hex case", route(path_prefix="/a%2Fb"), head(b"/a%2fb"), True),
    ("prefix utf-8", route(path_prefix="/café"), head(b"/caf%C3%A9/menu"), True),
    ("prefix asterisk", route(path_prefix="/"), head(b"*", method=b"OPTIONS"), False),
    # path_regex: searched in the path, not the query
    ("regex", route(path_regex=re.compile(r"^/u/\d+$")), head(b"/u/42"), True),
    ("regex query", route(path_regex=re.compile(r"^/u/\d+$")), head(b"/u/42?a=b"), True),
    ("regex miss", route(path_regex=re.compile(r"^/u/\d+$")), head(b"/u/x"), False),
    ("regex search", route(path_regex=re.compile(r"\.php$")), head(b"/a/b.php"), True),
    ("regex no query", route(path_regex=re.compile(r"debug")), head(b"/a?debug=1"), False),
    ("regex fragment", route(path_regex=re.compile(r"x$")), head(b"/x#frag"), True),
    # method: any of them, case-sensitive on the wire
    ("method", route(methods=("GET", "HEAD")), head(method=b"HEAD"), True),
    ("method other", route(methods=("GET", "HEAD")), head(method=b"POST"), False),
    ("method case", route(methods=("GET",)), head(method=b"get"), False),
    # header: name case-insensitive (parsers lowercase it), value exact
    ("header", route(headers=(("x-env", "prod"),)), head(x_env=b"prod"), True),
    ("header value", route(headers=(("x-env", "prod"),)), head(x_env=b"Prod"), False),
    ("header missing", route(headers=(("x-env", "prod"),)), head(), False),
    (
        "header any field",
        route(headers=(("x-env", "prod"),)),
        with_fields([(b"x-env", b"dev"), (b"x-env", b"prod")]),
        True,
    ),
    ("header all", route(headers=(("x-a", "1"), ("x-b", "2"))), head(x_a=b"1"), False),
    ("header both", route(headers=(("x-a", "1"), ("x-b", "2"))), head(x_a=b"1", x_b=b"2"), True),
    ("header utf-8", route(headers=(("x-n", "é"),)), head(x_n="é".encode()), True),
    # cookie: every Cookie field, any pair, names case-sensitive
    ("cookie", route(cookies=(("sid", "abc"),)), head(cookie=b"a=1; sid=abc; b=2"), True),
    ("cookie value", route(cookies=(("sid", "abc"),)), head(cookie=b"sid=abcd"), False),
    ("cookie name case", route(cookies=(("sid", "abc"),)), head(cookie=b"SID=abc"), False),
    ("cookie missing", route(cookies=(("sid", "abc"),)), head(), False),
    ("cookie no space", route(cookies=(("sid", "abc"),)), head(cookie=b"a=1;sid=abc"), True),
    (
        "cookie fields",
        route(cookies=(("sid", "abc"), ("lang", "fr"))),
        with_fields([(b"cookie", b"sid=abc"), (b"x", b"y"), (b"cookie", b"lang=fr; t=1")]),
        True,
    ),
    ("cookie in header", route(cookies=(("sid", "abc"),)), head(x_cookie=b"sid=abc"), False),
    ("cookie empty value", route(cookies=(("beta", ""),)), head(cookie=b"beta=; a=1"), True),
    # query: decoded arguments of the target
    ("query", route(query=(("page", "2"),)), head(b"/list?page=2"), True),
    ("query other", route(query=(("page", "2"),)), head(b"/list?page=3"), False),
    ("query any", route(query=(("page", "2"),)), head(b"/list?page=1&page=2"), True),
    ("query plus", route(query=(("q", "a b"),)), head(b"/s?x=&q=a+b"), True),
    ("query escapes", route(query=(("q", "a&b=é"),)), head(b"/s?q=a%26b%3D%C3%A9"), True),
    ("query name escape", route(query=(("a b", "1"),)), head(b"/s?a%20b=1"), True),
    ("query blank", route(query=(("flag", ""),)), head(b"/s?flag"), True),
    ("query missing", route(query=(("page", "2"),)), head(b"/list"), False),
    ("query in path", route(query=(("page", "2"),)), head(b"/page=2"), False),
    ("query fragment", route(query=(("a", "1"),)), head(b"/?a=1#b=2"), True),
    # every given field must match
    (
        "all fields",
        route(
            host="*.example.com",
            path_prefix="/v1/",
            path_regex=re.compile(r"/items/\d+$"),
            methods=("PUT",),
            headers=(("x-env", "prod"),),
            cookies=(("sid", "1"),),
            query=(("dry", "no"),),
        ),
        head(
            b"/v1/items/7?dry=no",
            method=b"PUT",
            host=b"a.example.com",
            x_env=b"prod",
            cookie=b"sid=1",
        ),
        True,
    ),
    (
        "all but one",
        route(host="*.example.com", path_prefix="/v1/", methods=("PUT",), query=(("dry", "no"),)),
        head(b"/v1/items/7?dry=yes", method=b"PUT", host=b"a.example.com"),
        False,
    ),
    ("no conditions", route(), head(b"/anything", method=b"DELETE", host=None), True),
]


@pytest.mark.parametrize(("name", "r", "req", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_field(name: str, r: Route, req: RequestHead, expected: bool) -> None:
    assert hits(r, req) is expected


# -- order, default --------------------------------------------------------------


def test_first_match_wins() -> None:
    routes = [
        Route(backend="api-v1", index=0, host="api.example.com", path_prefix="/v1/"),
        Route(backend="api", index=1, host="api.example.com"),
        Route(backend="static", index=2, path_prefix="/static/"),
        Route(backend="never", index=3, host="api.example.com", path_prefix="/v1/x"),
    ]
    router = Router.compile(routes, "app")
    assert router.match(head(b"/v1/x", host=b"api.example.com")) is routes[0]
    assert router.match(head(b"/v2", host=b"api.example.com")) is routes[1]
    assert router.match(head(b"/static/a.css", host=b"api.example.com")) is routes[1]
    assert router.match(head(b"/static/a.css", host=b"www.example.com")) is routes[2]
    assert router.match(head(b"/", host=b"www.example.com")) is router.default


def test_no_match_goes_to_the_default_backend() -> None:
    router = Router.compile([Route(backend="api", index=0, path_prefix="/api")], "app")
    matched = router.match(head(b"/home"))
    assert matched is router.default
    assert matched == Route(backend="app", index=-1)


def test_no_routes_is_always_the_default() -> None:
    router = Router.compile([], "app")
    assert router.match(head(b"/x", method=b"POST")).backend == "app"
    assert router.match(RequestHead(method=b"", target=b"")).backend == "app"


def test_same_backend_routes_are_told_apart_by_index() -> None:
    routes = [
        Route(backend="api", index=0, methods=("GET",)),
        Route(backend="api", index=1, methods=("POST",)),
    ]
    router = Router.compile(routes, "app")
    assert router.match(head(method=b"POST")).index == 1


def test_a_router_serves_many_requests() -> None:
    # Derived values are per request: one request's cookies never leak into the next.
    router = Router.compile([Route(backend="beta", index=0, cookies=(("beta", "1"),))], "app")
    assert router.match(head(cookie=b"beta=1")).backend == "beta"
    assert router.match(head()).backend == "app"
    assert router.match(head(cookie=b"beta=1")).backend == "beta"


def test_cookies_and_query_are_parsed_only_when_a_rule_needs_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def spy(name: str, real: Callable[[T], Iterator[tuple[bytes, bytes]]]) -> object:
        def wrapper(arg: T) -> Iterator[tuple[bytes, bytes]]:
            calls.append(name)
            return real(arg)

        return wrapper

    monkeypatch.setattr(router_module, "iter_cookies", spy("cookies", keys.iter_cookies))
    monkeypatch.setattr(router_module, "iter_query", spy("query", keys.iter_query))
    routes = [
        Route(backend="api", index=0, host="api.example.com"),
        Route(backend="beta", index=1, cookies=(("beta", "1"),)),
        Route(backend="page", index=2, query=(("page", "2"),)),
        Route(backend="both", index=3, cookies=(("x", "1"),), query=(("y", "1"),)),
    ]
    router = Router.compile(routes, "app")
    req = head(b"/?page=2", host=b"api.example.com", cookie=b"beta=1")
    assert router.match(req).backend == "api"
    assert calls == []
    assert router.match(head(b"/?page=2", cookie=b"beta=1")).backend == "beta"
    assert calls == ["cookies"]
    calls.clear()
    # Parsed once per request however many rules need them.
    assert router.match(head(b"/?page=3", cookie=b"beta=0")).backend == "app"
    assert calls == ["cookies", "query"]
    calls.clear()
    no_cookie_rules = Router.compile(routes[:1], "app")
    assert no_cookie_rules.match(head(b"/?page=2", cookie=b"beta=1")).backend == "app"
    assert calls == []


# -- helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"Example.COM", b"example.com"),
        (b"example.com:8080", b"example.com"),
        (b"example.com.", b"example.com"),
        (b"example.com.:80", b"example.com"),
        (b"[::1]:80", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b" example.com ", b"example.com"),
        (b"::1", b"::1"),  # not a valid Host; kept whole rather than cut at a colon
        (b"example.com:", b"example.com"),
    ],
)
def test_host_name(raw: bytes, name: bytes) -> None:
    assert host_name(raw) == name


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        (b"/a/b", b"/a/b"),
        (b"/%61%62", b"/ab"),
        (b"/a%2fb", b"/a%2Fb"),
        (b"/a%zz", b"/a%zz"),
        (b"/a/./b", b"/a/b"),
        (b"/a/b/../c", b"/a/c"),
        (b"/a/..", b"/"),
        (b"/a/b/..", b"/a/"),
        (b"/../../x", b"/x"),
        (b"/a/.", b"/a/"),
        (b"/.well-known/x", b"/.well-known/x"),
        (b"/a/%2E%2E/b", b"/b"),
        (b"*", b"*"),
        (b"", b""),
    ],
)
def test_normalize_path(path: bytes, normal: bytes) -> None:
    assert normalize_path(path) == normal


# -- never raises ----------------------------------------------------------------

ALL_FIELDS = [
    Route(backend="a", index=0, host="*.example.com", methods=("GET",)),
    Route(backend="b", index=1, host="api.example.com", path_prefix="/v1/"),
    Route(backend="c", index=2, path_regex=re.compile(r"^/u/(\d+)/?$")),
    Route(backend="d", index=3, headers=(("x-env", "prod"),)),
    Route(backend="e", index=4, cookies=(("sid", "abc"),)),
    Route(backend="f", index=5, query=(("page", "2"), ("q", "é"))),
    Route(backend="g", index=6, path_prefix="/café"),
]
ROUTER = Router.compile(ALL_FIELDS, "default")
URLISH = st.one_of(
    st.binary(max_size=80),
    st.text(alphabet="/%.?&=#+;:@[]*aAé0123456789", max_size=60).map(str.encode),
)
NAMES = st.sampled_from([b"host", b"cookie", b"x-env", b"x-other"]) | st.binary(max_size=10)


@given(
    method=st.binary(max_size=10),
    target=URLISH,
    fields=st.lists(st.tuples(NAMES, URLISH), max_size=8),
)
def test_match_never_raises(
    method: bytes, target: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    req = RequestHead(method=method, target=target, headers=Headers(fields))
    matched = ROUTER.match(req)
    assert matched is ROUTER.default or matched in ALL_FIELDS
    # The first matching rule wins: no earlier route may match on its own.
    for earlier in ALL_FIELDS[: matched.index if matched.index >= 0 else len(ALL_FIELDS)]:
        assert Router.compile([earlier], "default").match(req).backend == "default"
