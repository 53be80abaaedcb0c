"""Parsers for the scalar value types of the config: numbers, names, durations, sizes,
addresses.

Each parser takes the raw TOML value and the key path, and raises ConfigError naming
that path. They know nothing of the tables around them (that is config/load.py).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable

from trilb.config.schema import Address
from trilb.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "k": 1024, "K": 1024, "M": 1024**2, "G": 1024**3,
}  # fmt: skip


def parse_int(lo: int, hi: int) -> Callable[[object, str], int]:
    """A parser of integers from ``lo`` to ``hi`` inclusive (booleans are not integers)."""

    def parse(value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(path, f"expected an integer from {lo} to {hi}, got {value!r}")
        return value

    return parse


def parse_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {value!r}")
    return value


def parse_name(value: object, path: str) -> str:
    """A non-empty string: the name of a backend, a server, a plugin."""
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a name (a non-empty string), got {value!r}")
    return value


def parse_choice(options: tuple[str, ...]) -> Callable[[object, str], str]:
    """A parser accepting exactly one of ``options``."""

    def parse(value: object, path: str) -> str:
        if not isinstance(value, str) or value not in options:
            wanted = " | ".join(f'"{o}"' for o in options)
            raise ConfigError(path, f"expected {wanted}, got {value!r}")
        return value

    return parse


def parse_duration(value: object, path: str) -> float:
    """Parse "500ms", "30s", "5m" or "1h" into seconds; zero is allowed."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ConfigError(path, f'expected a duration such as "500ms" or "30s", got {value!r}')


def parse_timeout(value: object, path: str) -> float:
    """A duration that must be above zero (a zero timeout would fail every wait)."""
    seconds = parse_duration(value, path)
    if seconds <= 0:
        raise ConfigError(path, f"expected a duration above zero, got {value!r}")
    return seconds


def parse_size(value: object, path: str) -> int:
    """Parse a byte count: an integer, or a string such as "64KiB" or "1MiB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise ConfigError(path, f'expected a size such as 65536 or "64KiB", got {value!r}')


def parse_size_limit(lo: int, hi: int) -> Callable[[object, str], int]:
    """A parser of sizes (see parse_size) from ``lo`` to ``hi`` bytes inclusive."""

    def parse(value: object, path: str) -> int:
        size = parse_size(value, path)
        if not lo <= size <= hi:
            raise ConfigError(path, f"expected a size from {lo} to {hi} bytes, got {value!r}")
        return size

    return parse


def parse_address(value: object, path: str, *, resolve: bool = False) -> Address:
    """Parse "host:port" or "[v6]:port".

    Args:
      resolve: when true a hostname is resolved once, now, to its first address (for
        backend servers); when false only IP literals are accepted (for binds).

    Raises:
      ConfigError: not a string, no port, a port out of range, or an unknown host.
    """
    if not isinstance(value, str):
        raise ConfigError(path, f'expected an address "host:port", got {value!r}')
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(path, f'expected an address "host:port", got {value!r}')
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConfigError(path, f"unbalanced brackets in address {value!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(path, f'an IPv6 address needs brackets, as in "[::1]:80": {value!r}')
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(path, f"port must be a number from 0 to 65535 in {value!r}")
    port = int(port_text)
    try:
        return Address(str(ipaddress.ip_address(host)), port)
    except ValueError:
        pass
    if not resolve:
        raise ConfigError(path, f"expected an IP address to bind, got host {host!r} in {value!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(path, f"cannot resolve host {host!r}: {exc}") from None
    return Address(str(infos[0][4][0]), port)
