"""A frontend's ``limits`` table: allow/deny networks and per-source limits.

Owns reading and checking the table (networks in CIDR form, IPv4 and IPv6; a bare
address is a network of one); l4/limits.py applies it.
"""

from __future__ import annotations

import ipaddress

from trilb.config.schema import Limits
from trilb.config.table import Table
from trilb.config.values import parse_int
from trilb.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_limits(value: object, path: str) -> Limits:
    """``limits = { allow, deny, max_conn_per_source, rate_per_source, burst_per_source }``.

    Raises:
      ConfigError: a key is unknown, a network is not CIDR, a number is out of range.
    """
    t = Table(value, path)
    t.take("allow", parse_networks)
    t.take("deny", parse_networks)
    t.take("max_conn_per_source", parse_int(0, 10_000_000))
    t.take("rate_per_source", _rate)
    t.take("burst_per_source", parse_int(0, 10_000_000))
    return t.build(Limits)


def parse_networks(value: object, path: str) -> tuple[Network, ...]:
    """A list of networks in CIDR form (a bare address: a network of one)."""
    if not isinstance(value, list):
        raise ConfigError(path, f'expected a list of networks ("10.0.0.0/8", "::1"), got {value!r}')
    out = []
    for i, item in enumerate(value):
        try:
            # strict: "10.0.0.1/8" (host bits set) is a typo more often than a wish.
            out.append(ipaddress.ip_network(item, strict=True))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}[{i}]", f"expected a network in CIDR form: {exc}") from None
    return tuple(out)


def _rate(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1e7:
        raise ConfigError(path, f"expected new connections per second (0 to 1e7), got {value!r}")
    return float(value)
