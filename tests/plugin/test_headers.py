"""The headers plugin on request and response heads, without sockets."""

from __future__ import annotations

import uuid

import pytest
from trilb_plugins.headers import Headers as HeadersPlugin
from trilb_plugins.headers import HeaderSettings

from trilb.errors import ConfigError
from trilb.messages import Headers, RequestHead, ResponseHead
from trilb.plugin import CONTINUE, Context, Request, Response
from trilb.plugin.settings import parse_settings


def plugin(raw: dict[str, object]) -> HeadersPlugin:
    return HeadersPlugin(parse_settings(HeaderSettings, raw, "plugins.headers"))


def request(*fields: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead(b"GET", b"/a?b=c", headers=Headers([(b"host", b"h.test"), *fields]),
                       raw=b"GET /a?b=c HTTP/1.1\r\nhost: h.test")  # fmt: skip


def test_request_and_response_rewrites_in_order_with_variables() -> None:
    p = plugin({
        "request": {"remove": ["X-Debug"], "set": {"X-Env": "prod", "X-From": "%{client_ip}"},
                    "add": {"X-Seen": "%{scheme}://%{host}"},
                    "replace": [{"name": "X-Path", "pattern": "^/old", "with": "/new"}]},
        "response": {"remove": ["Server"], "add": {"X-Served-By": "%{frontend}/%{backend}"}},
    })  # fmt: skip
    ctx = Context("10.0.0.9", "https", "web")
    head = request((b"x-debug", b"1"), (b"x-env", b"dev"), (b"x-path", b"/old/x"))
    assert p.on_request(ctx, Request(head)) is CONTINUE
    assert head.raw == b""  # changed: rebuilt when forwarded
    assert head.headers.items == [(b"host", b"h.test"), (b"x-env", b"prod"),
                                  (b"x-from", b"10.0.0.9"), (b"x-seen", b"https://h.test"),
                                  (b"x-path", b"/new/x")]  # fmt: skip
    ctx.backend = "app"
    rhead = ResponseHead(200, b"OK", headers=Headers([(b"server", b"nginx")]), raw=b"x")
    p.on_response(ctx, Response(rhead))
    assert rhead.raw == b""
    assert rhead.headers.items == [(b"x-served-by", b"web/app")]


def test_a_request_id_is_kept_or_generated_and_echoed() -> None:
    p = plugin({"request_id": "X-Request-Id", "request": {"set": {"X-Trace": "%{request_id}"}}})
    ctx = Context("10.0.0.9", "http", "web")
    head = request()
    p.on_request(ctx, Request(head))
    rid = head.headers.get(b"x-request-id")
    assert rid is not None and uuid.UUID(rid.decode()).version == 4
    assert head.headers.get(b"x-trace") == rid
    rhead = ResponseHead(200)
    p.on_response(ctx, Response(rhead))
    assert rhead.headers.get(b"x-request-id") == rid
    kept = request((b"x-request-id", b"abc"))
    p.on_request(Context("1.2.3.4", "http", "web"), Request(kept))
    assert kept.headers.get_all(b"x-request-id") == [b"abc"]


def test_nothing_to_change_leaves_the_head_as_received() -> None:
    p = plugin({"request": {"remove": ["X-Absent"]}})
    head = request()
    p.on_request(Context("1.2.3.4", "http", "web"), Request(head))
    assert head.raw  # nothing removed: still forwarded as received


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"request": {"set": {"X": "%{nope}"}}}, 'plugins.headers.request.set."X"'),
        ({"request": {"replace": [{"name": "X", "pattern": "("}]}},
         "plugins.headers.request.replace[0].pattern"),
        ({"response": {"delete": ["X"]}}, "plugins.headers.response.delete"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_key(raw: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        plugin(raw)
    assert err.value.path == path
