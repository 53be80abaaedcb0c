"""Request parts for balancing and routing: target split, cookies, query, balancer keys."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trilb.balance.algorithms import ServerSlot, make_balancer
from trilb.balance.keys import (
    iter_cookies,
    iter_query,
    key_function,
    request_key,
    split_target,
)
from trilb.messages import Headers, RequestHead


def req(target: bytes = b"/", fields: list[tuple[bytes, bytes]] | None = None) -> RequestHead:
    return RequestHead(method=b"GET", target=target, headers=Headers(fields or []))


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        (b"/a/b", (None, b"/a/b", None)),
        (b"/a?x=1&y", (None, b"/a", b"x=1&y")),
        (b"/a?", (None, b"/a", b"")),
        (b"/a?x#frag", (None, b"/a", b"x")),
        (b"/a#f?x", (None, b"/a", None)),
        (b"http://h.example:8080/p?q", (b"h.example:8080", b"/p", b"q")),
        (b"HTTPS://h.example", (b"h.example", b"/", None)),
        (b"http://h.example?q=1", (b"h.example", b"/", b"q=1")),
        (b"http://user@h.example/p", (b"h.example", b"/p", None)),
        (b"*", (None, b"*", None)),
        (b"h.example:443", (None, b"h.example:443", None)),
        (b"", (None, b"", None)),
    ],
)
def test_split_target(target: bytes, parts: tuple[bytes | None, bytes, bytes | None]) -> None:
    assert split_target(target) == parts


def test_cookies_from_every_cookie_field() -> None:
    headers = Headers(
        [
            (b"cookie", b"a=1; b=2"),
            (b"x-cookie", b"no=1"),
            (b"cookie", b' c = 3 ;d="q";flag; =x;e=a=b'),
        ]
    )
    assert list(iter_cookies(headers)) == [
        (b"a", b"1"),
        (b"b", b"2"),
        (b"c", b"3"),
        (b"d", b'"q"'),
        (b"e", b"a=b"),
    ]


def test_query_arguments_are_decoded() -> None:
    assert list(iter_query(b"a=1&b=x+y&c=%C3%A9%26&&flag&d=%zz&%3D=eq")) == [
        (b"a", b"1"),
        (b"b", b"x y"),
        (b"c", "é&".encode()),
        (b"flag", b""),
        (b"d", b"%zz"),
        (b"=", b"eq"),
    ]


@pytest.mark.parametrize(
    ("kind", "request_", "key"),
    [
        ("uri", req(b"/img/1.png?v=2"), b"/img/1.png"),
        ("uri", req(b"http://h/img?v=2"), b"/img"),
        ("header:x-user", req(fields=[(b"x-user", b"ann"), (b"x-user", b"bob")]), b"ann"),
        ("header:x-user", req(fields=[(b"x-other", b"ann")]), None),
        ("header:X-User", req(fields=[(b"x-user", b"ann")]), b"ann"),
        ("cookie:sid", req(fields=[(b"cookie", b"a=1; sid=s1"), (b"cookie", b"sid=s2")]), b"s1"),
        ("cookie:sid", req(fields=[(b"cookie", b"SID=s1")]), None),
        ("cookie:sid", req(), None),
        ("roundrobin", req(), None),
        ("source", req(b"/x"), None),
    ],
)
def test_request_key(kind: str, request_: RequestHead, key: bytes | None) -> None:
    assert request_key(request_, kind) == key


def test_only_request_kinds_have_a_key_function() -> None:
    assert [key_function(k) is None for k in ("roundrobin", "leastconn", "random", "source")] == [
        True
    ] * 4
    assert all(key_function(k) is not None for k in ("uri", "header:a", "cookie:b"))


def test_same_cookie_same_server() -> None:
    slots = [ServerSlot(index=i, name=f"s{i}", weight=1) for i in range(4)]
    balancer = make_balancer("cookie:sid", slots, random.Random(1))
    extract = key_function("cookie:sid")
    assert extract is not None
    for sid in (b"a", b"b", b"c"):
        request_ = req(fields=[(b"cookie", b"sid=" + sid)])
        picks: set[str] = set()
        for _ in range(5):
            slot = balancer.pick(extract(request_))
            assert slot is not None
            picks.add(slot.name)
        assert len(picks) == 1


@given(target=st.binary(max_size=60), value=st.binary(max_size=60))
def test_keys_never_raise(target: bytes, value: bytes) -> None:
    fields = [(b"cookie", value), (b"x-user", value)]
    for kind in ("uri", "header:x-user", "cookie:sid"):
        request_key(req(target, fields), kind)
    list(iter_query(value))
    split_target(target)
