"""The sticky plugin's cookie logic, without sockets."""

from __future__ import annotations

import pytest
from trilb_plugins.sticky import Sticky, StickySettings

from trilb.errors import ConfigError
from trilb.messages import Headers, RequestHead, ResponseHead
from trilb.plugin import CONTINUE, Context, Request, Response, UseServer
from trilb.plugin.settings import parse_settings

KEY = "a test key of enough length"


def sticky(**raw: object) -> Sticky:
    return Sticky(parse_settings(StickySettings, {"key": KEY, **raw}, "plugins.sticky"))


def request(cookie: str | None) -> Request:
    fields = [(b"host", b"a")] + ([(b"cookie", cookie.encode())] if cookie else [])
    return Request(RequestHead(b"GET", b"/", headers=Headers(fields)))


def answered(plugin: Sticky, ctx: Context, server: str | None) -> list[str]:
    ctx.server = server
    rhead = ResponseHead(200)
    plugin.on_response(ctx, Response(rhead))
    return [v.decode() for v in rhead.headers.get_all(b"set-cookie")]


def test_a_first_response_gets_a_cookie_that_pins_later_requests() -> None:
    p = sticky(max_age="1h", secure=True)
    ctx = Context("1.2.3.4", "https", "web")
    assert p.on_request(ctx, request(None)) is CONTINUE
    (cookie,) = answered(p, ctx, "web2")
    name_value, *attrs = cookie.split("; ")
    assert name_value.startswith("TRILB_SERVER=") and "web2" not in name_value  # opaque
    assert attrs == ["Path=/", "Max-Age=3600", "Secure", "HttpOnly", "SameSite=Lax"]
    again = Context("1.2.3.4", "https", "web")
    assert p.on_request(again, request(f"a=1; {name_value}; b=2")) == UseServer("web2")
    assert answered(p, again, "web2") == []  # already pinned there: no new cookie


def test_another_instance_with_the_key_reads_it_and_a_moved_server_reissues() -> None:
    value = sticky().seal("web1")
    other = sticky()  # another worker or trilb instance, the same key
    ctx = Context("1.2.3.4", "http", "web")
    assert other.on_request(ctx, request(f"TRILB_SERVER={value}")) == UseServer("web1")
    ctx.pinned_missed = True  # web1 was down: the balancer picked web3
    (cookie,) = answered(other, ctx, "web3")
    fresh = cookie.split("; ")[0].split("=", 1)[1]
    assert other.open(fresh) == "web3"


@pytest.mark.parametrize("tamper", ["flip", "truncate", "other-key", "garbage", "huge"])
def test_a_forged_or_tampered_cookie_is_ignored(tamper: str) -> None:
    p = sticky()
    value = p.seal("web1")
    if tamper == "flip":
        value = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    elif tamper == "truncate":
        value = value[:10]
    elif tamper == "other-key":
        value = Sticky(parse_settings(StickySettings, {"key": KEY + "!"}, "p")).seal("web1")
    elif tamper == "garbage":
        value = "not base64 at all!"
    else:
        value = "A" * 10_000
    ctx = Context("1.2.3.4", "http", "web")
    assert p.on_request(ctx, request(f"TRILB_SERVER={value}")) is CONTINUE
    assert len(answered(p, ctx, "web2")) == 1  # and a good one is issued


def test_settings_are_checked() -> None:
    for raw, path in (({"key": "short"}, None), ({"samesite": "lax"}, "plugins.sticky.samesite"),
                      ({"cookie": "a b"}, "plugins.sticky.cookie")):  # fmt: skip
        if path is None:
            with pytest.raises(ValueError):
                Sticky(parse_settings(StickySettings, raw, "plugins.sticky"))
        else:
            with pytest.raises(ConfigError) as err:
                sticky(**raw)
            assert err.value.path == path
