"""mode "http" frontends, routes and L7 balance kinds: defaults, shapes, key-path errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from trilb.config.load import load_config
from trilb.config.schema import (
    Address,
    Backend,
    Config,
    Frontend,
    Route,
    WebSocket,
    is_l7_balance,
)
from trilb.errors import ConfigError

# DESIGN.md's configuration example as written there, without its plugins, TLS files
# and health checks (tested elsewhere). The backends it names but does not show (pg,
# api, resolvers) are added at the end.
DESIGN_HTTP = """
[global]
workers = 2                       # or "auto" (one per CPU)

[admin]                           # control plane; loopback by default
bind = "127.0.0.1:8404"           # /stats (HTML), /metrics (Prometheus), /api/...

[frontends.db]                    # L4 TCP
mode = "tcp"
bind = "127.0.0.1:15432"
default_backend = "pg"

[frontends.dns]                   # L4 UDP
mode = "udp"
bind = "127.0.0.1:5353"
default_backend = "resolvers"

[frontends.web]                   # L7
mode = "http"
bind = ["127.0.0.1:8080"]         # a string or a list
default_backend = "app"

[frontends.websecure]               # TLS; the first cert is the default for unknown SNI names
mode = "http"
bind = "127.0.0.1:8443"
default_backend = "app"
websocket = { max_message_size = "1MiB", idle_timeout = "60s" }   # optional

[[frontends.web.routes]]          # first match wins; every given field must match
host = "api.example.com"          # also: path_prefix, path_regex, method (a string or a list),
path_prefix = "/v1/"              #       header = {NAME = "value"}, cookie = {..}, query = {..}
backend = "api"

[backends.app]
balance = "roundrobin"  # roundrobin | leastconn | random | source | uri | header:NAME | cookie:NAME
servers = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 2, name = "web2" }]
# a server's name defaults to its address; sizes are bytes or strings ("64KiB", "1MiB")

[backends.pg]
servers = ["127.0.0.1:5432"]

[backends.api]
servers = ["127.0.0.1:9101"]

[backends.resolvers]
servers = ["127.0.0.1:53"]
"""

APP = '[backends.app]\nservers = ["127.0.0.1:9001"]\n'
API = '[backends.api]\nservers = ["127.0.0.1:9101"]\n'
WEB = '[frontends.web]\nmode = "http"\nbind = "127.0.0.1:8080"\ndefault_backend = "app"\n'
STREAMS = "frontends.web.max_concurrent_streams"


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "trilb.toml"
    path.write_text(text)
    return load_config(path)


# -- valid configs ---------------------------------------------------------------


def test_design_example_loads(tmp_path: Path) -> None:
    config = load(tmp_path, DESIGN_HTTP)
    assert list(config.frontends) == ["db", "dns", "web", "websecure"]
    dns = config.frontends["dns"]
    assert (dns.mode, dns.idle_timeout, dns.max_flows) == ("udp", 30.0, 10000)
    web = config.frontends["web"]
    assert web.mode == "http"
    assert web.binds == (Address("127.0.0.1", 8080),)
    assert web.default_backend == "app"
    assert web.routes == (
        Route(backend="api", index=0, host="api.example.com", path_prefix="/v1/"),
    )
    secure = config.frontends["websecure"]
    assert (secure.mode, secure.binds, secure.routes) == ("http", (Address("127.0.0.1", 8443),), ())
    assert secure.websocket == WebSocket(idle_timeout=60.0, max_message_size=1 << 20)
    assert secure.websocket.messages and not web.websocket.messages
    assert config.frontends["db"].mode == "tcp"
    assert [s.name for s in config.backends["app"].servers] == ["127.0.0.1:9001", "web2"]
    assert config.summary() == "4 frontend(s), 4 backend(s), 5 server(s), workers=2"


def test_http_defaults_come_from_schema(tmp_path: Path) -> None:
    web = load(tmp_path, WEB + APP).frontends["web"]
    for f in dataclasses.fields(Frontend):
        if f.default is not dataclasses.MISSING:
            assert getattr(web, f.name) == f.default, f.name
    assert (web.header_timeout, web.body_timeout, web.keepalive_timeout) == (10.0, 60.0, 60.0)
    assert (web.max_request_line, web.max_header_size, web.max_headers) == (8192, 32768, 100)
    assert web.max_body_size == 0
    app = load(tmp_path, WEB + APP).backends["app"]
    assert (app.response_timeout, app.pool_max_idle, app.pool_idle_timeout) == (60.0, 128, 4.0)
    assert app.pool_max_per_server == 0
    assert Backend("x", ()).balance == "roundrobin"


def test_every_http_key_is_read(tmp_path: Path) -> None:
    text = """
    [frontends.web]
    mode = "http"
    bind = ["127.0.0.1:8080", "[::1]:8080"]
    default_backend = "app"
    maxconn = 500
    backlog = 64
    header_timeout = "5s"
    body_timeout = "30s"
    keepalive_timeout = "2m"
    max_request_line = "4KiB"
    max_header_size = "16KiB"
    max_headers = 50
    max_concurrent_streams = 32
    max_body_size = "100MiB"

    [[frontends.web.routes]]
    host = "API.Example.com."
    path_prefix = "/v1/"
    path_regex = "^/v1/(users|groups)/[0-9]+$"
    method = ["get", "HEAD", "Get"]
    header = { "X-Env" = "prod", accept = "application/json" }
    cookie = { SID = "abc123" }
    query = { page = "2", "q" = "a b" }
    backend = "api"

    [[frontends.web.routes]]
    host = "*.Example.com"
    method = "post"
    backend = "app"

    [backends.app]
    balance = "header:X-User"
    servers = ["127.0.0.1:9001"]
    connect_timeout = "1s"
    retries = 1
    response_timeout = "90s"
    pool_max_idle = 0
    pool_idle_timeout = "30s"
    pool_max_per_server = 100

    [backends.api]
    balance = "cookie:SID"
    servers = ["127.0.0.1:9101"]
    """
    config = load(tmp_path, text)
    web = config.frontends["web"]
    assert (web.maxconn, web.backlog) == (500, 64)
    assert (web.header_timeout, web.body_timeout, web.keepalive_timeout) == (5.0, 30.0, 120.0)
    assert (web.max_request_line, web.max_header_size, web.max_headers) == (4096, 16384, 50)
    assert web.max_body_size == 100 * 1024 * 1024
    assert web.max_concurrent_streams == 32
    first, second = web.routes
    assert first == Route(
        backend="api",
        index=0,
        host="api.example.com",
        path_prefix="/v1/",
        path_regex=re.compile("^/v1/(users|groups)/[0-9]+$"),
        methods=("GET", "HEAD"),
        headers=(("x-env", "prod"), ("accept", "application/json")),
        cookies=(("SID", "abc123"),),
        query=(("page", "2"), ("q", "a b")),
    )
    assert isinstance(first.path_regex, re.Pattern)
    assert second == Route(backend="app", index=1, host="*.example.com", methods=("POST",))
    app = config.backends["app"]
    assert app.balance == "header:x-user"
    assert (app.connect_timeout, app.retries, app.response_timeout) == (1.0, 1, 90.0)
    assert (app.pool_max_idle, app.pool_idle_timeout, app.pool_max_per_server) == (0, 30.0, 100)
    assert config.backends["api"].balance == "cookie:SID"


def test_routes_are_frozen(tmp_path: Path) -> None:
    text = WEB + API + APP + '[[frontends.web.routes]]\npath_prefix = "/a"\nbackend = "api"\n'
    route = load(tmp_path, text).frontends["web"].routes[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.backend = "app"  # type: ignore[misc]  # asserting the runtime refusal
    assert hash(route) == hash(dataclasses.replace(route))


@pytest.mark.parametrize(
    ("balance", "stored"),
    [
        ("uri", "uri"),
        ("header:X-Tenant", "header:x-tenant"),
        ("cookie:JSESSIONID", "cookie:JSESSIONID"),
        ("source", "source"),
    ],
)
def test_l7_balance_kinds_on_http_frontends(tmp_path: Path, balance: str, stored: str) -> None:
    text = WEB + f'[backends.app]\nbalance = "{balance}"\nservers = ["127.0.0.1:9001"]\n'
    assert load(tmp_path, text).backends["app"].balance == stored


def test_l7_balance_on_a_route_only_backend_is_fine_next_to_tcp(tmp_path: Path) -> None:
    # A backend reached only from an http route may hash by URI, while a tcp frontend
    # uses another backend.
    text = (
        WEB
        + '[[frontends.web.routes]]\npath_prefix = "/api"\nbackend = "api"\n'
        + '[frontends.db]\nmode = "tcp"\nbind = "127.0.0.1:15432"\ndefault_backend = "app"\n'
        + APP
        + '[backends.api]\nbalance = "uri"\nservers = ["127.0.0.1:9101"]\n'
    )
    assert load(tmp_path, text).backends["api"].balance == "uri"


def test_is_l7_balance() -> None:
    assert [is_l7_balance(k) for k in ("uri", "header:a", "cookie:b")] == [True] * 3
    assert [is_l7_balance(k) for k in ("roundrobin", "leastconn", "random", "source")] == [
        False
    ] * 4


# -- errors ----------------------------------------------------------------------


def route(body: str) -> str:
    return WEB + API + APP + f"[[frontends.web.routes]]\n{body}\n"


def routes3(body: str) -> str:
    """A third route (routes[2]) after two valid ones."""
    ok = '[[frontends.web.routes]]\npath_prefix = "/a"\nbackend = "api"\n'
    return WEB + API + APP + ok + ok + f"[[frontends.web.routes]]\n{body}\n"


def web(extra: str) -> str:
    return WEB + extra + "\n" + API + APP


R0 = "frontends.web.routes[0]"
TO_API = 'backend = "api"\n'

ERRORS = [
    # the examples of DESIGN.md and of the brief, key path for key path
    pytest.param(
        routes3('backend = "apii"'),
        "frontends.web.routes[2].backend",
        'unknown backend "apii" (backends: "api", "app")',
        id="unknown-route-backend",
    ),
    pytest.param(
        routes3('path_regex = "^/v1/(users"\n' + TO_API),
        "frontends.web.routes[2].path_regex",
        "invalid regular expression '^/v1/(users': missing ), unterminated subpattern",
        id="bad-regex",
    ),
    # routes: shape
    pytest.param(web('routes = "api"'), "frontends.web.routes", "expected an array of tables"),
    pytest.param(web("routes = [1]"), R0, "expected a table", id="route-not-table"),
    pytest.param(route('host = "a.com"'), f"{R0}.backend", "required", id="route-no-backend"),
    pytest.param(route("backend = 3"), f"{R0}.backend", "expected a name"),
    pytest.param(route(TO_API + "hots = 1"), f"{R0}.hots", "unknown key", id="route-unknown"),
    pytest.param(
        route(TO_API + 'plugins = ["sticky"]'),
        f"{R0}.plugins[0]",
        'unknown plugin instance "sticky"',
        id="route-plugins",
    ),
    pytest.param(
        route(TO_API + 'plugins = "sticky"'),
        f"{R0}.plugins",
        "expected a list of plugin instance names",
        id="route-plugins-not-a-list",
    ),
    # routes: fields
    pytest.param(route(TO_API + 'host = "a.com:8080"'), f"{R0}.host", "no port"),
    pytest.param(route(TO_API + 'host = "*"'), f"{R0}.host", "expected a host name"),
    pytest.param(route(TO_API + 'host = "a.*.com"'), f"{R0}.host", "'a.*.com'"),
    pytest.param(route(TO_API + 'host = ""'), f"{R0}.host", "expected a host name", id="host-''"),
    pytest.param(route(TO_API + "host = 5"), f"{R0}.host", "got 5"),
    pytest.param(route(TO_API + 'path_prefix = "v1"'), f"{R0}.path_prefix", 'starting with "/"'),
    pytest.param(route(TO_API + 'path_prefix = "/a?b=1"'), f"{R0}.path_prefix", "no query"),
    pytest.param(route(TO_API + 'path_prefix = "/a b"'), f"{R0}.path_prefix", "no spaces"),
    pytest.param(route(TO_API + 'path_regex = ""'), f"{R0}.path_regex", "a regular expression"),
    pytest.param(route(TO_API + "path_regex = 1"), f"{R0}.path_regex", "a regular expression"),
    pytest.param(route(TO_API + "method = 1"), f"{R0}.method", "expected a method"),
    pytest.param(route(TO_API + "method = []"), f"{R0}.method", "non-empty list"),
    pytest.param(route(TO_API + 'method = ["GET", 5]'), f"{R0}.method[1]", "got 5"),
    pytest.param(route(TO_API + 'method = "GE T"'), f"{R0}.method", "'GE T'"),
    pytest.param(route(TO_API + 'header = "x"'), f"{R0}.header", "expected a table"),
    pytest.param(
        route(TO_API + 'header = { "X Bad" = "1" }'),
        f'{R0}.header."X Bad"',
        "expected a header name",
    ),
    pytest.param(route(TO_API + "header = { X-A = 1 }"), f"{R0}.header.X-A", "got 1"),
    pytest.param(
        route(TO_API + 'header = { X-A = " padded" }'),
        f"{R0}.header.X-A",
        "no leading or trailing space",
    ),
    pytest.param(
        route(TO_API + 'header = { X-A = "a\\nb" }'), f"{R0}.header.X-A", "no control characters"
    ),
    pytest.param(
        route(TO_API + 'header = { X-A = "1", x-a = "2" }'),
        f"{R0}.header.x-a",
        'duplicate header name "x-a"',
    ),
    pytest.param(
        route(TO_API + 'cookie = { SID = "a;b" }'), f"{R0}.cookie.SID", "expected a cookie value"
    ),
    pytest.param(
        route(TO_API + 'cookie = { "a=b" = "1" }'), f'{R0}.cookie."a=b"', "expected a cookie name"
    ),
    pytest.param(route(TO_API + "cookie = []"), f"{R0}.cookie", "expected a table"),
    pytest.param(route(TO_API + "query = { page = 2 }"), f"{R0}.query.page", "expected a string"),
    pytest.param(route(TO_API + 'query = { "" = "x" }'), f'{R0}.query.""', "expected a name"),
    # frontend keys
    pytest.param(
        web('plugins = ["waf"]'), "frontends.web.plugins[0]", 'unknown plugin instance "waf"'
    ),
    pytest.param(
        web('tls = { certs = [{ cert = "no-such-site.pem", key = "site.key" }] }'),
        "frontends.web.tls.certs[0].cert",
        "cannot read",
    ),
    pytest.param(
        web('websocket = { idle_timeout = "0s" }'),
        "frontends.web.websocket.idle_timeout",
        "above zero",
    ),
    pytest.param(
        web('websocket = { max_message_size = "lots" }'),
        "frontends.web.websocket.max_message_size",
        "expected a size",
    ),
    pytest.param(web("websocket = { ping = true }"), "frontends.web.websocket.ping", "unknown key"),
    pytest.param(web("splice = false"), "frontends.web.splice", 'only for mode "tcp"'),
    pytest.param(web('idle_timeout = "1m"'), "frontends.web.idle_timeout", 'only for mode "tcp"'),
    pytest.param(web('header_timeout = "0s"'), "frontends.web.header_timeout", "above zero"),
    pytest.param(web("header_timeout = 10"), "frontends.web.header_timeout", "a duration"),
    pytest.param(web('body_timeout = "1 minute"'), "frontends.web.body_timeout", "a duration"),
    pytest.param(web('keepalive_timeout = "-1s"'), "frontends.web.keepalive_timeout", "'-1s'"),
    pytest.param(web("max_request_line = 8"), "frontends.web.max_request_line", "from 16 to"),
    pytest.param(web('max_request_line = "8TiB"'), "frontends.web.max_request_line", "a size"),
    pytest.param(web('max_header_size = "2GiB"'), "frontends.web.max_header_size", "from 64 to"),
    pytest.param(web("max_headers = 0"), "frontends.web.max_headers", "from 1 to"),
    pytest.param(web("max_concurrent_streams = 0"), STREAMS, "from 1 to 128"),
    pytest.param(web("max_concurrent_streams = 129"), STREAMS, "from 1 to 128"),
    pytest.param(web("max_body_size = -1"), "frontends.web.max_body_size", "a size"),
    pytest.param(
        WEB.replace('"app"', '"nope"') + APP,
        "frontends.web.default_backend",
        'unknown backend "nope"',
        id="unknown-default-backend",
    ),
    # the same http-only keys on a tcp frontend
    pytest.param(
        '[frontends.db]\nmode = "tcp"\nbind = "127.0.0.1:1"\ndefault_backend = "app"\n'
        'header_timeout = "5s"\n' + APP,
        "frontends.db.header_timeout",
        'only for mode "http"',
        id="http-key-on-tcp",
    ),
    pytest.param(
        '[frontends.dns]\nmode = "udp"\nbind = "127.0.0.1:5353"\ndefault_backend = "app"\n'
        'header_timeout = "5s"\n' + APP,
        "frontends.dns.header_timeout",
        'only for mode "http"',
        id="http-key-on-udp",
    ),
    # backends
    pytest.param(
        WEB + '[backends.app]\nbalance = "header:"\nservers = ["127.0.0.1:1"]\n',
        "backends.app.balance",
        'expected "header:NAME"',
    ),
    pytest.param(
        WEB + '[backends.app]\nbalance = "cookie:a b"\nservers = ["127.0.0.1:1"]\n',
        "backends.app.balance",
        "'cookie:a b'",
    ),
    pytest.param(
        WEB + '[backends.app]\nbalance = "hdr(host)"\nservers = ["127.0.0.1:1"]\n',
        "backends.app.balance",
        "uri | header:NAME | cookie:NAME, got 'hdr(host)'",
    ),
    pytest.param(
        WEB + '[backends.app]\nresponse_timeout = "soon"\nservers = ["127.0.0.1:1"]\n',
        "backends.app.response_timeout",
        "a duration",
    ),
    pytest.param(
        WEB + '[backends.app]\npool_max_idle = -1\nservers = ["127.0.0.1:1"]\n',
        "backends.app.pool_max_idle",
        "-1",
    ),
    pytest.param(
        WEB + '[backends.app]\npool_idle_timeout = "0ms"\nservers = ["127.0.0.1:1"]\n',
        "backends.app.pool_idle_timeout",
        "above zero",
    ),
    pytest.param(
        WEB + '[backends.app]\npool_max_per_server = true\nservers = ["127.0.0.1:1"]\n',
        "backends.app.pool_max_per_server",
        "True",
    ),
    pytest.param(
        WEB
        + '[backends.app]\nhealth = { type = "http", expect = [99] }\nservers = ["127.0.0.1:1"]\n',
        "backends.app.health.expect[0]",
        "expected a status code",
    ),
    pytest.param(
        WEB + '[backends.app]\nhealth = { type = "tcp", path = "/h" }\nservers = ["127.0.0.1:1"]\n',
        "backends.app.health.path",
        'only for type = "http"',
    ),
    pytest.param(
        WEB + '[backends.app]\nhealth = { interval = "1s", timeout = "2s" }\n'
        'servers = ["127.0.0.1:1"]\n',
        "backends.app.health.timeout",
        "longer than the interval",
    ),
    # L7 balance behind a tcp frontend: the error is on the reference
    pytest.param(
        '[frontends.db]\nmode = "tcp"\nbind = "127.0.0.1:1"\ndefault_backend = "app"\n'
        '[backends.app]\nbalance = "uri"\nservers = ["127.0.0.1:1"]\n',
        "frontends.db.default_backend",
        'backend "app" balances by "uri", which needs mode "http" (this frontend is mode "tcp")',
        id="uri-behind-tcp",
    ),
    pytest.param(
        WEB
        + '[frontends.db]\nmode = "tcp"\nbind = "127.0.0.1:1"\ndefault_backend = "app"\n'
        + '[backends.app]\nbalance = "cookie:SID"\nservers = ["127.0.0.1:1"]\n',
        "frontends.db.default_backend",
        'balances by "cookie:SID"',
        id="cookie-behind-tcp-shared-with-http",
    ),
]


@pytest.mark.parametrize(("text", "path", "fragment"), ERRORS)
def test_http_config_errors(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    file = tmp_path / "trilb.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    err = info.value
    assert err.path == path
    assert fragment in err.message
    assert err.file == str(file)
    assert str(err) == f"{file}: {path}: {err.message}"
    assert err.message == err.message.strip()
    assert not err.message.endswith(".")
