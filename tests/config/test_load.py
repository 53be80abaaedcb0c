"""Loading TOML into a frozen Config: defaults, shapes, and errors with exact key paths."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from trilb.config.load import load_config
from trilb.config.schema import Address, Backend, Config, Frontend, Global, Server
from trilb.errors import ConfigError

# The TCP parts of DESIGN.md's configuration example, as written there.
DESIGN_TCP = """
[global]
workers = 2                       # or "auto" (one per CPU)

[admin]                           # control plane; loopback by default
bind = "127.0.0.1:8404"

[frontends.db]                    # L4 TCP
mode = "tcp"
bind = "127.0.0.1:15432"
default_backend = "pg"

[backends.pg]
balance = "roundrobin"
servers = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 2, name = "web2" }]
"""

BACKEND = """
[backends.pg]
servers = ["127.0.0.1:5432"]
"""

FRONTEND = """
[frontends.db]
mode = "tcp"
bind = "127.0.0.1:15432"
default_backend = "pg"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trilb.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, **kwargs: int) -> Config:
    return load_config(write(tmp_path, text), **kwargs)


# -- valid configs ---------------------------------------------------------------


def test_design_example_loads(tmp_path: Path) -> None:
    config = load(tmp_path, DESIGN_TCP)
    assert config.source == str(tmp_path / "trilb.toml")
    assert config.global_.workers == 2
    assert config.admin.bind == Address("127.0.0.1", 8404)
    assert list(config.frontends) == ["db"]
    assert config.frontends["db"] == Frontend(
        name="db", mode="tcp", binds=(Address("127.0.0.1", 15432),), default_backend="pg"
    )
    pg = config.backends["pg"]
    assert pg.balance == "roundrobin"
    assert pg.servers == (
        Server("127.0.0.1:9001", Address("127.0.0.1", 9001), "127.0.0.1:9001", 1),
        Server("web2", Address("127.0.0.1", 9002), "127.0.0.1:9002", 2),
    )
    assert config.summary() == "1 frontend(s), 1 backend(s), 2 server(s), workers=2"


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, DESIGN_TCP)
    fe = config.frontends["db"]
    be = config.backends["pg"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.global_.workers = 8  # type: ignore[misc]  # asserting the runtime refusal
    with pytest.raises(dataclasses.FrozenInstanceError):
        fe.default_backend = "other"  # type: ignore[misc]  # asserting the runtime refusal
    with pytest.raises(dataclasses.FrozenInstanceError):
        be.servers[0].weight = 7  # type: ignore[misc]  # asserting the runtime refusal
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.admin.bind.port = 1  # type: ignore[misc]  # asserting the runtime refusal
    with pytest.raises(TypeError):
        config.frontends["x"] = fe  # type: ignore[index]  # asserting the runtime refusal
    with pytest.raises(TypeError):
        config.backends["x"] = be  # type: ignore[index]  # asserting the runtime refusal
    assert isinstance(fe.binds, tuple)
    assert isinstance(be.servers, tuple)


def test_defaults_come_from_schema(tmp_path: Path) -> None:
    config = load(tmp_path, FRONTEND + BACKEND)
    assert config.global_ == Global()
    assert config.admin.bind == Address("127.0.0.1", 8404)
    fe = config.frontends["db"]
    for f in dataclasses.fields(Frontend):
        if f.default is not dataclasses.MISSING:
            assert getattr(fe, f.name) == f.default, f.name
    be = config.backends["pg"]
    for f in dataclasses.fields(Backend):
        if f.default is not dataclasses.MISSING:
            assert getattr(be, f.name) == f.default, f.name
    assert be.servers[0].weight == 1


def test_every_tcp_key_is_read(tmp_path: Path) -> None:
    text = """
    [global]
    workers = 4
    grace = "5s"
    log_level = "debug"

    [admin]
    bind = "[::1]:9000"

    [frontends.db]
    mode = "tcp"
    bind = ["127.0.0.1:15432", "[::1]:15432"]
    default_backend = "pg"
    maxconn = 50
    backlog = 16
    idle_timeout = "5m"
    splice = false

    [backends.pg]
    balance = "leastconn"
    connect_timeout = "500ms"
    retries = 0
    servers = [{ address = "[::1]:5432", weight = 0 }]
    """
    config = load(tmp_path, text)
    assert config.global_ == Global(workers=4, grace=5.0, log_level="debug")
    assert config.admin.bind == Address("::1", 9000)
    fe = config.frontends["db"]
    assert fe.binds == (Address("127.0.0.1", 15432), Address("::1", 15432))
    assert (fe.maxconn, fe.backlog, fe.idle_timeout, fe.splice) == (50, 16, 300.0, False)
    be = config.backends["pg"]
    assert (be.balance, be.connect_timeout, be.retries) == ("leastconn", 0.5, 0)
    assert be.servers == (Server("[::1]:5432", Address("::1", 5432), "[::1]:5432", 0),)


def test_auto_workers_is_none(tmp_path: Path) -> None:
    config = load(tmp_path, '[global]\nworkers = "auto"\n' + FRONTEND + BACKEND)
    assert config.global_.workers is None
    assert config.summary().endswith("workers=auto")


@pytest.mark.parametrize(
    ("bind", "binds"),
    [
        ('"127.0.0.1:1"', (Address("127.0.0.1", 1),)),
        ('["127.0.0.1:1"]', (Address("127.0.0.1", 1),)),
        ('["127.0.0.1:1", "127.0.0.1:2"]', (Address("127.0.0.1", 1), Address("127.0.0.1", 2))),
    ],
)
def test_bind_is_a_string_or_a_list(tmp_path: Path, bind: str, binds: tuple[Address]) -> None:
    text = f'[frontends.db]\nmode = "tcp"\nbind = {bind}\ndefault_backend = "pg"\n' + BACKEND
    assert load(tmp_path, text).frontends["db"].binds == binds


def test_server_as_string_or_table(tmp_path: Path) -> None:
    text = FRONTEND + (
        "[backends.pg]\n"
        'servers = ["127.0.0.1:1", { address = "127.0.0.1:2" }, '
        '{ address = "127.0.0.1:3", name = "three", weight = 256 }]\n'
    )
    servers = load(tmp_path, text).backends["pg"].servers
    assert [(s.name, s.spec, s.weight) for s in servers] == [
        ("127.0.0.1:1", "127.0.0.1:1", 1),
        ("127.0.0.1:2", "127.0.0.1:2", 1),
        ("three", "127.0.0.1:3", 256),
    ]
    assert [s.address.port for s in servers] == [1, 2, 3]


def test_server_hostname_is_resolved(tmp_path: Path) -> None:
    text = FRONTEND + '[backends.pg]\nservers = ["localhost:80"]\n'
    server = load(tmp_path, text).backends["pg"].servers[0]
    assert server.name == "localhost:80"
    assert server.spec == "localhost:80"
    assert server.address.host in ("127.0.0.1", "::1")
    assert server.address.port == 80


def test_workers_override(tmp_path: Path) -> None:
    text = '[global]\nworkers = "auto"\ngrace = "7s"\nlog_level = "error"\n' + FRONTEND + BACKEND
    config = load(tmp_path, text, workers=3)
    assert config.global_ == Global(workers=3, grace=7.0, log_level="error")
    assert config.source == str(tmp_path / "trilb.toml")
    assert list(config.frontends) == ["db"]
    assert list(config.backends) == ["pg"]
    assert load(tmp_path, text).global_.workers is None


@pytest.mark.parametrize("workers", [0, -1, 1025])
def test_workers_override_is_validated_like_the_file(tmp_path: Path, workers: int) -> None:
    # global.workers accepts 1..1024; the command-line override must not smuggle in
    # a value the file could not hold (0 slots would serve nothing, forever).
    with pytest.raises(ConfigError) as info:
        load(tmp_path, FRONTEND + BACKEND, workers=workers)
    assert "workers" in str(info.value)


def test_port_zero_binds_may_repeat(tmp_path: Path) -> None:
    text = (
        '[frontends.a]\nmode = "tcp"\nbind = "127.0.0.1:0"\ndefault_backend = "pg"\n'
        '[frontends.b]\nmode = "tcp"\nbind = "127.0.0.1:0"\ndefault_backend = "pg"\n' + BACKEND
    )
    config = load(tmp_path, text)
    assert list(config.frontends) == ["a", "b"]


def test_v4_and_v6_wildcards_do_not_overlap(tmp_path: Path) -> None:
    # The listeners set IPV6_V6ONLY, so [::]:80 and 0.0.0.0:80 are separate sockets.
    text = (
        '[frontends.a]\nmode = "tcp"\nbind = "0.0.0.0:80"\ndefault_backend = "pg"\n'
        '[frontends.b]\nmode = "tcp"\nbind = "[::]:80"\ndefault_backend = "pg"\n' + BACKEND
    )
    assert len(load(tmp_path, text).frontends) == 2


# -- errors ----------------------------------------------------------------------


def fe(body: str, name: str = "db") -> str:
    return f"[frontends.{name}]\n{body}\n"


TCP = 'mode = "tcp"\n'
DB_BIND = 'bind = "127.0.0.1:15432"\n'
TO_PG = 'default_backend = "pg"\n'
DB = TCP + DB_BIND + TO_PG


def be(servers: str, extra: str = "") -> str:
    return f"[backends.pg]\n{extra}servers = {servers}\n"


ERRORS = [
    # unknown keys, at every level
    pytest.param("bogus = 1\n" + FRONTEND + BACKEND, "bogus", "unknown key", id="top-unknown"),
    pytest.param("[global]\nwokers = 2\n" + FRONTEND + BACKEND, "global.wokers", "unknown key"),
    pytest.param("[admin]\nport = 1\n" + FRONTEND + BACKEND, "admin.port", "unknown key"),
    pytest.param(fe(DB + "bakend = 1"), "frontends.db.bakend", "unknown key"),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1"]', "wieght = 1\n"), "backends.pg.wieght", "unknown key"
    ),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1", { address = "127.0.0.1:2", weigth = 2 }]'),
        "backends.pg.servers[1].weigth",
        "unknown key",
        id="server-unknown",
    ),
    # the admin endpoint: a token is required off loopback, and must look like one
    pytest.param(
        '[admin]\nbind = "0.0.0.0:8404"\n' + FRONTEND + BACKEND,
        "admin.token",
        "required when admin.bind (0.0.0.0:8404) is not a loopback",
        id="admin-open",
    ),
    pytest.param(
        '[admin]\ntoken = "short"\n' + FRONTEND + BACKEND,
        "admin.token",
        "16 to 512",
        id="admin-short-token",
    ),
    pytest.param(
        '[admin]\ntoken = "with a space inside it"\n' + FRONTEND + BACKEND,
        "admin.token",
        "visible ASCII",
        id="admin-token-space",
    ),
    pytest.param(
        '[admin]\ntoken_file = "missing.token"\n' + FRONTEND + BACKEND,
        "admin.token_file",
        "cannot read",
        id="admin-token-file",
    ),
    pytest.param(
        '[access_log]\nformat = "xml"\n' + FRONTEND + BACKEND,
        "access_log.format",
        '"text" | "json"',
        id="access-log-format",
    ),
    pytest.param(
        '[access_log]\npath = "/no/such/dir/a.log"\n' + FRONTEND + BACKEND,
        "access_log.path",
        "no directory",
        id="access-log-dir",
    ),
    pytest.param(
        '[dns]\nnameservers = ["resolver.local"]\n' + FRONTEND + BACKEND,
        "dns.nameservers[0]",
        "",
        id="dns-nameserver-name",
    ),
    pytest.param(
        FRONTEND + be('["dns:pg.local"]'),
        "backends.pg.servers[0].address",
        'expected "dns:NAME:PORT"',
        id="dns-no-port",
    ),
    pytest.param(
        FRONTEND + be('["dns:pg.local:5432"]', "dns_slots = 0\n"),
        "backends.pg.dns_slots",
        "",
        id="dns-slots-zero",
    ),
    # keys of the contract that later versions implement
    pytest.param(
        FRONTEND + BACKEND + "[plugins.nosuch]\n", "plugins.nosuch", 'unknown plugin type "nosuch"'
    ),
    pytest.param(
        fe(DB + 'plugins = ["headers"]') + BACKEND + "[plugins.headers]\n",
        "frontends.db.plugins[0]",
        'plugin "headers" has no on_connect, the only phase a mode "tcp" frontend runs',
        id="tcp-plugin-without-on-connect",
    ),
    pytest.param(
        fe(DB + 'routes = [{ backend = "pg" }]') + BACKEND,
        "frontends.db.routes",
        'only for mode "http"',
        id="routes-on-tcp",
    ),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1"]', 'health = { type = "ping" }\n'),
        "backends.pg.health.type",
        'expected "tcp" | "http"',
    ),
    pytest.param(
        fe(DB.replace("tcp", "udp")) + be('["127.0.0.1:1"]', "health = {}\n"),
        "frontends.db.default_backend",
        "does not run for UDP servers",
        id="udp-health",
    ),
    # modes
    pytest.param(
        fe(DB.replace("tcp", "udp") + "maxconn = 10") + BACKEND,
        "frontends.db.maxconn",
        'not for mode "udp"',
        id="udp-maxconn",
    ),
    pytest.param(
        fe(DB.replace("tcp", "udp") + "accept_proxy = true") + BACKEND,
        "frontends.db.accept_proxy",
        'not for mode "udp"',
        id="udp-accept-proxy",
    ),
    pytest.param(
        fe(DB.replace("tcp", "udp") + 'routes = [{ backend = "pg" }]') + BACKEND,
        "frontends.db.routes",
        'only for mode "http"',
        id="udp-routes",
    ),
    pytest.param(
        fe(DB + 'accept_proxy_from = ["10.0.0.0/8"]') + BACKEND,
        "frontends.db.accept_proxy_from",
        "needs accept_proxy = true",
        id="proxy-from-without-accept",
    ),
    pytest.param(
        fe(DB + "max_flows = 10") + BACKEND,
        "frontends.db.max_flows",
        'only for mode "udp"',
        id="tcp-max-flows",
    ),
    pytest.param(
        fe(DB.replace("tcp", "udp") + "max_flows = 0") + BACKEND,
        "frontends.db.max_flows",
        "expected",
        id="udp-max-flows-zero",
    ),
    pytest.param(
        fe(DB.replace("tcp", "udp")) + be('["127.0.0.1:1"]', 'send_proxy = "v2"\n'),
        "frontends.db.default_backend",
        "not send over UDP",
        id="udp-send-proxy",
    ),
    pytest.param(
        fe(DB.replace("tcp", "quic")) + BACKEND,
        "frontends.db.mode",
        'expected "tcp" | "udp" | "http"',
        id="mode-unknown",
    ),
    # missing required keys
    pytest.param(fe(DB_BIND + TO_PG) + BACKEND, "frontends.db.mode", "required", id="no-mode"),
    pytest.param(fe(TCP + TO_PG) + BACKEND, "frontends.db.bind", "required", id="no-bind"),
    pytest.param(fe(TCP + DB_BIND) + BACKEND, "frontends.db.default_backend", "required"),
    pytest.param(FRONTEND + "[backends.pg]\n", "backends.pg.servers", "required", id="no-servers"),
    pytest.param(FRONTEND + be("[]"), "backends.pg.servers", "non-empty", id="empty-servers"),
    pytest.param(FRONTEND + be("[{ weight = 2 }]"), "backends.pg.servers[0].address", "required"),
    pytest.param(BACKEND, "frontends", "at least one frontend", id="no-frontends"),
    pytest.param("", "frontends", "at least one frontend", id="empty-file"),
    # wrong types
    pytest.param("frontends = 1\n" + BACKEND, "frontends", "expected a table", id="frontends-int"),
    pytest.param("backends = []\n" + FRONTEND, "backends", "expected a table", id="backends-list"),
    pytest.param("[frontends]\ndb = 3\n" + BACKEND, "frontends.db", "expected a table"),
    pytest.param("global = 1\n" + FRONTEND + BACKEND, "global", "expected a table"),
    pytest.param('[global]\nworkers = "3"\n' + FRONTEND + BACKEND, "global.workers", "'3'"),
    pytest.param("[global]\nworkers = 0\n" + FRONTEND + BACKEND, "global.workers", "from 1 to"),
    pytest.param("[global]\nworkers = true\n" + FRONTEND + BACKEND, "global.workers", "True"),
    pytest.param("[global]\ngrace = 30\n" + FRONTEND + BACKEND, "global.grace", "a duration"),
    pytest.param(
        '[global]\nlog_level = "loud"\n' + FRONTEND + BACKEND, "global.log_level", "'loud'"
    ),
    pytest.param(
        '[admin]\nbind = "localhost:8404"\n' + FRONTEND + BACKEND,
        "admin.bind",
        "expected an IP address to bind",
    ),
    pytest.param(fe(DB + "maxconn = 0") + BACKEND, "frontends.db.maxconn", "got 0"),
    pytest.param(fe(DB + 'backlog = "16"') + BACKEND, "frontends.db.backlog", "'16'"),
    pytest.param(
        fe(DB + 'idle_timeout = "5 minutes"') + BACKEND, "frontends.db.idle_timeout", "'5 minutes'"
    ),
    pytest.param(fe(DB + 'splice = "yes"') + BACKEND, "frontends.db.splice", "true or false"),
    pytest.param(
        fe(TCP + DB_BIND + "default_backend = 5") + BACKEND,
        "frontends.db.default_backend",
        "expected a name",
    ),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1"]', 'balance = "fastest"\n'),
        "backends.pg.balance",
        "'fastest'",
    ),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1"]', 'connect_timeout = "1"\n'),
        "backends.pg.connect_timeout",
        "a duration",
    ),
    pytest.param(FRONTEND + be('["127.0.0.1:1"]', "retries = -1\n"), "backends.pg.retries", "-1"),
    pytest.param(FRONTEND + be('"127.0.0.1:1"'), "backends.pg.servers", "a list of servers"),
    pytest.param(FRONTEND + be("[5432]"), "backends.pg.servers[0]", "expected a table"),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1", { address = "127.0.0.1:2", weight = 257 }]'),
        "backends.pg.servers[1].weight",
        "from 0 to 256",
    ),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1", { address = "127.0.0.1:2", weight = "2" }]'),
        "backends.pg.servers[1].weight",
        "'2'",
    ),
    pytest.param(
        FRONTEND + be('[{ address = "127.0.0.1:2", name = "" }]'),
        "backends.pg.servers[0].name",
        "non-empty",
    ),
    # addresses
    pytest.param(
        fe(TCP + 'bind = "127.0.0.1"\n' + TO_PG) + BACKEND, "frontends.db.bind", '"host:port"'
    ),
    pytest.param(
        fe(TCP + 'bind = "127.0.0.1:70000"\n' + TO_PG) + BACKEND,
        "frontends.db.bind",
        "port must be a number from 0 to 65535",
    ),
    pytest.param(
        fe(TCP + 'bind = "127.0.0.1:\u00b2"\n' + TO_PG) + BACKEND,
        "frontends.db.bind",
        "port must be a number",
        id="superscript-port",
    ),
    pytest.param(
        fe(TCP + 'bind = "::1:80"\n' + TO_PG) + BACKEND, "frontends.db.bind", "needs brackets"
    ),
    pytest.param(
        fe(TCP + 'bind = ["127.0.0.1:1", "localhost:80"]\n' + TO_PG) + BACKEND,
        "frontends.db.bind[1]",
        "expected an IP address to bind",
    ),
    pytest.param(fe(TCP + "bind = []\n" + TO_PG) + BACKEND, "frontends.db.bind", "non-empty"),
    pytest.param(fe(TCP + "bind = 15432\n" + TO_PG) + BACKEND, "frontends.db.bind", "15432"),
    pytest.param(FRONTEND + be('["127.0.0.1"]'), "backends.pg.servers[0].address", "host:port"),
    pytest.param(
        FRONTEND + be('["127.0.0.1:0"]'), "backends.pg.servers[0].address", "a port other than 0"
    ),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1", "[::1:2"]'),
        "backends.pg.servers[1].address",
        "unbalanced brackets",
    ),
    # references and duplicates
    pytest.param(
        fe(TCP + DB_BIND + 'default_backend = "pgg"') + BACKEND,
        "frontends.db.default_backend",
        'unknown backend "pgg" (backends: "pg")',
    ),
    pytest.param(FRONTEND, "frontends.db.default_backend", "none defined", id="no-backends"),
    pytest.param(
        FRONTEND + fe(DB, "db2") + BACKEND,
        "frontends.db2.bind",
        "127.0.0.1:15432 overlaps 127.0.0.1:15432 bound by frontends.db.bind",
    ),
    pytest.param(
        fe(TCP + 'bind = "0.0.0.0:15432"\n' + TO_PG, "any") + FRONTEND + BACKEND,
        "frontends.db.bind",
        "overlaps 0.0.0.0:15432",
    ),
    pytest.param(
        FRONTEND + fe(TCP + 'bind = ["127.0.0.1:1", "0.0.0.0:15432"]\n' + TO_PG, "any") + BACKEND,
        "frontends.any.bind[1]",
        "0.0.0.0:15432 overlaps 127.0.0.1:15432",
        id="wildcard-after-literal",
    ),
    pytest.param(
        fe(TCP + 'bind = ["[::]:1", "[::1]:1"]\n' + TO_PG) + BACKEND,
        "frontends.db.bind[1]",
        "[::1]:1 overlaps [::]:1",
    ),
    pytest.param(
        fe(TCP + 'bind = ["127.0.0.1:1", "127.0.0.1:1"]\n' + TO_PG) + BACKEND,
        "frontends.db.bind[1]",
        "bound by frontends.db.bind[0]",
    ),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1", "127.0.0.1:1"]'),
        "backends.pg.servers[1]",
        'duplicate server name "127.0.0.1:1" (also backends.pg.servers[0])',
    ),
    pytest.param(
        FRONTEND + be('["127.0.0.1:1", { address = "127.0.0.1:2", name = "127.0.0.1:1" }]'),
        "backends.pg.servers[1]",
        "duplicate server name",
        id="duplicate-name-of-table",
    ),
    pytest.param(
        FRONTEND
        + be(
            '[{ address = "127.0.0.1:1", name = "a" }, { address = "127.0.0.1:2", '
            'name = "b" }, { address = "127.0.0.1:3", name = "a" }]'
        ),
        "backends.pg.servers[2]",
        'duplicate server name "a" (also backends.pg.servers[0])',
        id="duplicate-explicit-names",
    ),
]


@pytest.mark.parametrize(("text", "path", "fragment"), ERRORS)
def test_config_errors(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    err = info.value
    assert err.path == path
    assert fragment in err.message
    assert err.file == str(file)
    assert str(err) == f"{file}: {path}: {err.message}"
    assert err.message == err.message.strip()
    assert not err.message.endswith(".")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, "[frontends.db\nmode = 'tcp'\n")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert info.value.path == ""
    assert "not valid TOML" in info.value.message
    assert str(info.value).startswith(f"{file}: not valid TOML")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(os.fspath(file))
    assert info.value.path == ""
    assert str(info.value) == f"{file}: cannot read config: No such file or directory"


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read config")


@pytest.mark.parametrize(
    ("key", "table"),
    [("idle_timeout", "frontends.db"), ("connect_timeout", "backends.pg")],
)
def test_a_zero_timeout_is_rejected(tmp_path: Path, key: str, table: str) -> None:
    text = FRONTEND + BACKEND
    header = f"[{table}]\n"
    text = text.replace(header, f'{header}{key} = "0s"\n')
    path = tmp_path / "zero.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == f"{table}.{key}"
    assert "above zero" in str(info.value)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(("# caf\xe9\n" + FRONTEND + BACKEND).encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not UTF-8" in str(info.value)
    assert str(path) in str(info.value)
