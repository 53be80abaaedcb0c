"""Per-source admission (l4/limits.py) and its config table, without sockets."""

from __future__ import annotations

import ipaddress

import pytest

from trilb.config.limits import parse_limits
from trilb.config.schema import Limits
from trilb.errors import ConfigError
from trilb.l4.limits import SWEEP_EVERY, SourceLimits, parse_source


def limits(**keys: object) -> SourceLimits:
    return SourceLimits(parse_limits(keys, "frontends.web.limits"))


def test_allow_and_deny_lists_of_both_families() -> None:
    lim = limits(allow=["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"], deny=["10.6.0.0/16"])
    assert lim.admit("10.1.2.3", 0) is None
    assert lim.admit("10.6.0.9", 0) == "in deny"  # deny wins inside an allowed network
    assert lim.admit("192.0.2.1", 0) == "not in allow"
    assert lim.admit("2001:db8::1", 0) is None
    assert lim.admit("2001:db9::1", 0) == "not in allow"
    assert lim.admit("::ffff:10.1.2.3", 0) is None  # a v4 client of a dual-stack listener
    assert lim.admit("127.0.0.1", 0) is None and lim.admit("127.0.0.2", 0) == "not in allow"
    assert lim.admit("fe80::1%eth0", 0) == "not in allow"
    assert lim.admit("", 0) == "not an IP address"
    assert lim.entries == {}  # no count kept without a count limit


def test_max_connections_per_source() -> None:
    lim = limits(max_conn_per_source=2)
    got = [lim.admit("192.0.2.1", 0) for _ in range(3)]
    assert got == [None, None, "over max_conn_per_source (2)"]
    assert lim.admit("192.0.2.2", 0) is None  # another source has its own count
    lim.release("192.0.2.1")
    assert lim.admit("192.0.2.1", 0) is None
    for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        lim.release(ip)
    assert lim.entries == {}  # nothing held: nothing kept
    lim.release("192.0.2.9")  # (unknown: ignored)


def test_rate_per_source_is_a_token_bucket() -> None:
    lim = limits(rate_per_source=10, burst_per_source=3)
    got = [lim.admit("192.0.2.1", 0.0) for _ in range(4)]
    assert got == [None, None, None, "over rate_per_source (10/s)"]
    assert lim.admit("192.0.2.1", 0.05) == "over rate_per_source (10/s)"  # half a token
    assert lim.admit("192.0.2.1", 0.1) is None  # one token back after 0.1 s
    assert lim.admit("192.0.2.2", 0.1) is None
    for _ in range(4):
        lim.release("192.0.2.1")
    lim.release("192.0.2.2")
    lim.sweep(0.11)
    assert "192.0.2.2" in lim.entries  # its bucket (2.1 of 3) is not full again yet
    lim.sweep(10.0)
    assert lim.entries == {}


def test_a_scan_of_many_sources_is_swept() -> None:
    lim = limits(rate_per_source=100)
    for i in range(3 * SWEEP_EVERY):
        assert lim.admit(f"10.0.{i // 256}.{i % 256}", i * 1.0) is None
        lim.release(f"10.0.{i // 256}.{i % 256}")
    assert len(lim.entries) <= SWEEP_EVERY


def test_parse_source() -> None:
    assert parse_source("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    assert parse_source("nonsense") is None


@pytest.mark.parametrize(
    ("keys", "path", "fragment"),
    [
        ({"allow": "10.0.0.0/8"}, "limits.allow", "expected a list of networks"),
        ({"deny": ["10.0.0.1/8"]}, "limits.deny[0]", "has host bits set"),
        ({"allow": ["10.0.0.0/33"]}, "limits.allow[0]", "CIDR form"),
        ({"max_conn_per_source": -1}, "limits.max_conn_per_source", "expected"),
        ({"rate_per_source": "10/s"}, "limits.rate_per_source", "connections per second"),
        ({"burst": 3}, "limits.burst", "unknown key"),
    ],
)
def test_config_errors_name_the_key(keys: dict[str, object], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_limits(keys, "limits")
    assert caught.value.path == path and fragment in str(caught.value)


def test_defaults_limit_nothing() -> None:
    lim = SourceLimits(Limits())
    assert all(lim.admit("192.0.2.1", 0) is None for _ in range(1000))
    assert lim.entries == {}
