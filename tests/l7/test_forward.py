"""l7/forward.py: hop-by-hop stripping and the forwarding fields."""

from __future__ import annotations

import pytest

from trilb.l7.forward import VIA, forward_request_fields, forward_response_fields
from trilb.messages import Headers


def headers(*pairs: tuple[bytes, bytes]) -> Headers:
    return Headers(list(pairs))


@pytest.mark.parametrize(
    "name",
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    ],
)
def test_hop_by_hop_and_framing_fields_are_stripped(name: bytes) -> None:
    h = headers((b"host", b"a"), (name, b"x"), (b"accept", b"*/*"))
    kept = forward_request_fields(h, b"127.0.0.1", b"http", b"a")
    assert kept[:2] == [(b"host", b"a"), (b"accept", b"*/*")]
    assert all(n != name for n, _ in kept)
    assert forward_response_fields(h)[:2] == [(b"host", b"a"), (b"accept", b"*/*")]


def test_fields_named_in_connection_are_stripped_too() -> None:
    h = headers(
        (b"connection", b"close, X-Secret"),
        (b"connection", b"x-other"),
        (b"x-secret", b"1"),
        (b"x-other", b"2"),
        (b"x-kept", b"3"),
    )
    assert forward_request_fields(h, b"127.0.0.1", b"http", None)[0] == (b"x-kept", b"3")
    assert forward_response_fields(h) == [(b"x-kept", b"3"), (b"via", VIA)]


def forwarded(h: Headers, ip: bytes = b"127.0.0.9", host: bytes | None = b"example.com") -> Headers:
    return Headers(forward_request_fields(h, ip, b"http", host))


def test_x_forwarded_for_is_appended_to_every_earlier_hop() -> None:
    h = forwarded(headers((b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2")))
    assert h.get_all(b"x-forwarded-for") == [b"10.0.0.1, 10.0.0.2, 127.0.0.9"]
    assert h.get(b"x-forwarded-proto") == b"http"
    assert h.get(b"x-forwarded-host") == b"example.com"
    assert h.get(b"via") == VIA


def test_forwarding_fields_replace_what_the_client_claimed() -> None:
    h = forwarded(
        headers(
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"evil"),
            (b"via", b"1.0 upstream"),
        ),
        b"127.0.0.1",
        None,
    )
    assert h.get_all(b"x-forwarded-proto") == [b"http"]
    assert h.get(b"x-forwarded-for") == b"127.0.0.1"
    assert b"x-forwarded-host" not in h  # no Host: the client's claim is dropped
    assert h.get(b"via") == b"1.0 upstream, " + VIA


def test_forwarded_request_drops_hop_by_hop_framing_and_expect_keeps_order() -> None:
    h = forwarded(
        headers(
            (b"host", b"a"),
            (b"connection", b"keep-alive"),
            (b"expect", b"100-continue"),
            (b"content-length", b"5"),
            (b"accept", b"*/*"),
            (b"te", b"trailers"),
        )
    )
    assert [n for n, _ in h] == [
        b"host",
        b"accept",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"via",
    ]


def test_connection_naming_forwarding_fields_drops_the_client_values() -> None:
    # The client asked for its X-Forwarded-For and Via to be hop-by-hop: they go, ours stay.
    h = forwarded(
        headers(
            (b"connection", b"x-forwarded-for, Via, X-Secret"),
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"via", b"1.0 evil"),
            (b"x-secret", b"s"),
            (b"x-kept", b"k"),
        ),
        b"127.0.0.1",
    )
    assert h.get_all(b"x-forwarded-for") == [b"127.0.0.1"]
    assert h.get_all(b"via") == [VIA]
    assert b"x-secret" not in h
    assert h.get(b"x-kept") == b"k"


def test_connection_cannot_drop_host() -> None:
    h = forwarded(headers((b"host", b"a"), (b"connection", b"host, x-a"), (b"x-a", b"1")))
    assert h.get(b"host") == b"a"
    assert b"x-a" not in h


def test_forwarded_response_drops_hop_by_hop_and_named_fields_and_appends_via() -> None:
    h = Headers(
        forward_response_fields(
            headers(
                (b"content-type", b"text/plain"),
                (b"connection", b"close, x-internal"),
                (b"x-internal", b"1"),
                (b"keep-alive", b"timeout=5"),
                (b"transfer-encoding", b"chunked"),
                (b"via", b"1.1 app"),
            ),
        )
    )
    assert h.items == [(b"content-type", b"text/plain"), (b"via", b"1.1 app, " + VIA)]


def test_forwarded_response_without_via_gets_trilbs() -> None:
    assert forward_response_fields(headers((b"etag", b'"1"'))) == [(b"etag", b'"1"'), (b"via", VIA)]
