"""Scalar config values: durations, sizes and addresses, each error naming its key path."""

from __future__ import annotations

import pytest

from trilb.config.schema import Address
from trilb.config.values import (
    parse_address,
    parse_bool,
    parse_choice,
    parse_duration,
    parse_int,
    parse_name,
    parse_size,
    parse_size_limit,
)
from trilb.errors import ConfigError

PATH = "frontends.db.idle_timeout"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (" 2s ", 2.0),
    ],
)
def test_duration_parses_units(text: str, seconds: float) -> None:
    assert parse_duration(text, PATH) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["30", "30 sec", "30S", "-1s", "s", "", "1d", "1.s", "ms500", 30, 1.5, True, None, ["1s"]],
)
def test_duration_rejects_bad_values(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, PATH)
    assert info.value.path == PATH
    assert "expected a duration" in info.value.message
    assert repr(value) in info.value.message


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (65536, 65536),
        ("123", 123),
        ("10B", 10),
        ("64KiB", 64 * 1024),
        ("1MiB", 1024**2),
        ("2GiB", 2 * 1024**3),
        ("1KB", 1000),
        ("3MB", 3_000_000),
        ("1GB", 10**9),
        ("4k", 4096),
    ],
)
def test_size_parses_units(value: object, size: int) -> None:
    assert parse_size(value, "frontends.web.websocket.max_message_size") == size


@pytest.mark.parametrize("value", [-1, True, 1.5, "1.5MiB", "64 XB", "MiB", "", "-5", None])
def test_size_rejects_bad_values(value: object) -> None:
    path = "frontends.web.websocket.max_message_size"
    with pytest.raises(ConfigError) as info:
        parse_size(value, path)
    assert info.value.path == path
    assert "expected a size" in info.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", Address("127.0.0.1", 80)),
        ("0.0.0.0:0", Address("0.0.0.0", 0)),
        ("10.0.0.3:65535", Address("10.0.0.3", 65535)),
        ("[::1]:80", Address("::1", 80)),
        ("[::]:443", Address("::", 443)),
        ("[0:0::1]:8080", Address("::1", 8080)),  # normalised, so duplicates compare equal
    ],
)
def test_address_literals(text: str, expected: Address) -> None:
    assert parse_address(text, "frontends.db.bind") == expected


def test_address_str_and_family() -> None:
    v4 = parse_address("127.0.0.1:80", "p")
    v6 = parse_address("[::1]:80", "p")
    assert str(v4) == "127.0.0.1:80"
    assert str(v6) == "[::1]:80"
    assert v4.sockaddr == ("127.0.0.1", 80)
    assert v6.family.name == "AF_INET6"
    assert v4.family.name == "AF_INET"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("127.0.0.1", "host:port"),
        (":80", "host:port"),
        ("127.0.0.1:", "port must be a number"),
        ("127.0.0.1:65536", "port must be a number from 0 to 65535"),
        ("127.0.0.1:-1", "port must be a number"),
        ("127.0.0.1:http", "port must be a number"),
        ("127.0.0.1:\u00b2", "port must be a number"),  # str.isdigit() is true, int() fails
        ("::1:80", "needs brackets"),
        ("fe80::1:80", "needs brackets"),
        ("[::1:80", "unbalanced brackets"),
        ("localhost:80", "expected an IP address to bind"),
        ("example.com:443", "expected an IP address to bind"),
        ("999.1.1.1:80", "expected an IP address to bind"),
        (8080, "host:port"),
        (None, "host:port"),
    ],
)
def test_address_errors_name_the_path(value: object, fragment: str) -> None:
    path = "frontends.db.bind[1]"
    with pytest.raises(ConfigError) as info:
        parse_address(value, path)
    assert info.value.path == path
    assert fragment in info.value.message
    assert str(info.value).startswith(f"{path}: ")


def test_server_hostname_resolves() -> None:
    addr = parse_address("localhost:80", "backends.pg.servers[0].address", resolve=True)
    assert addr.port == 80
    assert addr.host in ("127.0.0.1", "::1")


def test_server_literal_does_not_need_resolution() -> None:
    assert parse_address("[::1]:5432", "p", resolve=True) == Address("::1", 5432)


def test_unknown_server_host_is_a_config_error() -> None:
    path = "backends.pg.servers[0].address"
    with pytest.raises(ConfigError) as info:
        # .invalid is reserved (RFC 6761): it never resolves.
        parse_address("no-such-host.invalid:80", path, resolve=True)
    assert info.value.path == path
    assert "cannot resolve host 'no-such-host.invalid'" in info.value.message


@pytest.mark.parametrize(
    ("parse", "value", "fragment"),
    [
        (parse_int(1, 10), 0, "from 1 to 10, got 0"),
        (parse_int(1, 10), True, "got True"),
        (parse_int(1, 10), 2.0, "got 2.0"),
        (parse_bool, "yes", "true or false"),
        (parse_name, "", "non-empty"),
        (parse_choice(("a", "b")), "c", 'expected "a" | "b", got \'c\''),
        (parse_choice(("a", "b")), ["a"], "got ['a']"),
        (parse_size_limit(16, 1024), "8", "from 16 to 1024 bytes, got '8'"),
        (parse_size_limit(16, 1024), "2KiB", "got '2KiB'"),
        (parse_size_limit(16, 1024), "x", "expected a size"),
    ],
)
def test_scalar_errors_name_the_path(parse: object, value: object, fragment: str) -> None:
    assert callable(parse)
    with pytest.raises(ConfigError) as info:
        parse(value, PATH)
    assert info.value.path == PATH
    assert fragment in info.value.message


def test_scalars_pass_good_values() -> None:
    assert parse_int(0, 5)(5, PATH) == 5
    assert parse_bool(False, PATH) is False
    assert parse_name("pg", PATH) == "pg"
    assert parse_choice(("a", "b"))("b", PATH) == "b"
    assert parse_size_limit(16, 1 << 20)("8KiB", PATH) == 8192
