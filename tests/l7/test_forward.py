"""l7/forward.py: hop-by-hop stripping and the forwarding fields."""

from __future__ import annotations

import pytest

from trilb.l7.forward import VIA, add_forwarded, strip_hop_by_hop
from trilb.messages import Headers


def headers(*pairs: tuple[bytes, bytes]) -> Headers:
    return Headers(list(pairs))


@pytest.mark.parametrize(
    "name",
    [b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te",
     b"trailer", b"transfer-encoding", b"upgrade", b"content-length"],
)  # fmt: skip
def test_hop_by_hop_and_framing_fields_are_stripped(name: bytes) -> None:
    h = headers((b"host", b"a"), (name, b"x"), (b"accept", b"*/*"))
    strip_hop_by_hop(h)
    assert h.items == [(b"host", b"a"), (b"accept", b"*/*")]


def test_fields_named_in_connection_are_stripped_too() -> None:
    h = headers(
        (b"connection", b"close, X-Secret"),
        (b"connection", b"x-other"),
        (b"x-secret", b"1"),
        (b"x-other", b"2"),
        (b"x-kept", b"3"),
    )
    strip_hop_by_hop(h)
    assert h.items == [(b"x-kept", b"3")]


def test_a_websocket_upgrade_keeps_upgrade_and_says_connection_upgrade() -> None:
    h = headers(
        (b"connection", b"Upgrade, keep-alive"),
        (b"upgrade", b"websocket"),
        (b"keep-alive", b"timeout=5"),
    )
    strip_hop_by_hop(h, keep_upgrade=True)
    assert h.items == [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]


def test_x_forwarded_for_is_appended_to_every_earlier_hop() -> None:
    h = headers((b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2"))
    add_forwarded(h, b"127.0.0.9", b"http", b"example.com")
    assert h.get_all(b"x-forwarded-for") == [b"10.0.0.1, 10.0.0.2, 127.0.0.9"]
    assert h.get(b"x-forwarded-proto") == b"http"
    assert h.get(b"x-forwarded-host") == b"example.com"
    assert h.get(b"via") == VIA


def test_forwarding_fields_replace_what_the_client_claimed() -> None:
    h = headers((b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"evil"),
                (b"via", b"1.0 upstream"))  # fmt: skip
    add_forwarded(h, b"127.0.0.1", b"http", None)
    assert h.get_all(b"x-forwarded-proto") == [b"http"]
    assert h.get(b"x-forwarded-for") == b"127.0.0.1"
    assert b"x-forwarded-host" not in h  # no Host: the client's claim is dropped
    assert h.get(b"via") == b"1.0 upstream, " + VIA
