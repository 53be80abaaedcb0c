"""Reading a TOML file into a validated, frozen Config.

This module owns validation: unknown keys, wrong types, references between tables,
duplicate binds. Every error names the file, the dotted key path and what was expected.
Defaults are not written here: a key left out keeps the dataclass default of
config/schema.py. Socket-level checks (a port already taken) belong to master/sockets.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any, TypeVar

from trilb.config.schema import (
    BALANCE_KINDS,
    MAX_WEIGHT,
    Address,
    Admin,
    Backend,
    Config,
    Frontend,
    Global,
    Server,
)
from trilb.config.values import parse_address, parse_duration, parse_timeout
from trilb.errors import ConfigError

T = TypeVar("T")

# Keys of the public contract (DESIGN.md) that later versions implement; naming them
# gives a clearer error than "unknown key".
_NOT_YET = {
    "plugins": "plugins",
    "routes": "content routing (mode http)",
    "tls": "TLS termination",
    "websocket": "WebSocket proxying",
    "health": "active health checks",
}
_MODES = ("tcp", "udp", "http")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_IMPLEMENTED_MODES = ("tcp",)


class _Table:
    """A raw TOML table being read: tracks the key path and which keys were used."""

    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(path, f"expected a table, got {raw!r}")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.used: set[str] = set()
        self.values: dict[str, Any] = {}

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def take(self, name: str, parse: Callable[[object, str], T]) -> T | None:
        """Parse ``name`` if present; remember the result for build()."""
        self.used.add(name)
        if name not in self.raw:
            return None
        value = parse(self.raw[name], self.key(name))
        self.values[name] = value
        return value

    def finish(self) -> None:
        for name in self.raw:
            if name in self.used:
                continue
            if name in _NOT_YET:
                raise ConfigError(self.key(name), f"{_NOT_YET[name]} not supported yet")
            allowed = ", ".join(sorted(self.used)) or "none"
            raise ConfigError(self.key(name), f"unknown key (expected one of: {allowed})")


def _int(lo: int, hi: int) -> Callable[[object, str], int]:
    def parse(value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(path, f"expected an integer from {lo} to {hi}, got {value!r}")
        return value

    return parse


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {value!r}")
    return value


def _name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a name (a non-empty string), got {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(value: object, path: str) -> str:
        if value not in options:
            wanted = " | ".join(f'"{o}"' for o in options)
            raise ConfigError(path, f"expected {wanted}, got {value!r}")
        assert isinstance(value, str)
        return value

    return parse


def _workers(value: object, path: str) -> int | None:
    if value == "auto":
        return None
    return _int(1, 1024)(value, path)


def _build(cls: Callable[..., T], table: _Table, **known: Any) -> T:
    table.finish()
    return cls(**known, **table.values)


def load_config(
    file: str | os.PathLike[str], *, workers: int | None = None, log_level: str | None = None
) -> Config:
    """Read and validate a config file.

    Args:
      file: the TOML file.
      workers: a command-line override of ``global.workers``.
      log_level: a command-line override of ``global.log_level``.

    Returns:
      The frozen Config.

    Raises:
      ConfigError: the file is missing, is not TOML, or breaks the contract; the error
        names the file and the key path.
    """
    name = os.fspath(file)
    try:
        with open(name, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("", f"cannot read config: {exc.strerror}", name) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", name) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"not UTF-8 text (byte {exc.start}): {exc.reason}", name) from None
    try:
        config = parse_config(raw, source=name)
    except ConfigError as exc:
        exc.file = name
        raise
    if workers is not None:
        workers = _int(1, 1024)(workers, "--workers")
        config = replace(config, global_=replace(config.global_, workers=workers))
    if log_level is not None:
        log_level = _choice(_LOG_LEVELS)(log_level, "--log-level")
        config = replace(config, global_=replace(config.global_, log_level=log_level))
    return config


def parse_config(raw: dict[str, Any], source: str = "<string>") -> Config:
    """Validate an already-parsed TOML document (see load_config)."""
    top = _Table(raw, "")
    glob = _parse_global(top.take("global", _Table))
    admin = _parse_admin(top.take("admin", _Table))
    backends = _parse_tables(top.take("backends", _Table), _parse_backend)
    frontends = _parse_tables(top.take("frontends", _Table), _parse_frontend)
    top.finish()
    if not frontends:
        raise ConfigError("frontends", "at least one frontend is required")
    for fe in frontends.values():
        if fe.default_backend not in backends:
            known = ", ".join(f'"{b}"' for b in backends) or "none defined"
            raise ConfigError(
                f"frontends.{fe.name}.default_backend",
                f'unknown backend "{fe.default_backend}" (backends: {known})',
            )
    _check_binds(frontends)
    return Config(
        source=source,
        global_=glob,
        admin=admin,
        frontends=MappingProxyType(frontends),
        backends=MappingProxyType(backends),
    )


def _parse_tables(table: _Table | None, parse: Callable[[str, _Table], T]) -> dict[str, T]:
    if table is None:
        return {}
    out = {}
    for key in table.raw:
        out[key] = parse(key, _Table(table.raw[key], table.key(key)))
        table.used.add(key)
    return out


def _parse_global(t: _Table | None) -> Global:
    if t is None:
        return Global()
    t.take("workers", _workers)
    t.take("grace", parse_duration)
    t.take("log_level", _choice(_LOG_LEVELS))
    return _build(Global, t)


def _parse_admin(t: _Table | None) -> Admin:
    if t is None:
        return Admin()
    t.take("bind", parse_address)
    return _build(Admin, t, requested=True)


def _parse_frontend(name: str, t: _Table) -> Frontend:
    mode = t.take("mode", _choice(_MODES))
    if mode is None:
        raise ConfigError(t.key("mode"), 'required: "tcp", "udp" or "http"')
    if mode not in _IMPLEMENTED_MODES:
        raise ConfigError(t.key("mode"), f'mode "{mode}" is not supported yet (supported: tcp)')
    binds = t.take("bind", _binds)
    if binds is None:
        raise ConfigError(t.key("bind"), 'required: an address "host:port" or a list of them')
    backend = t.take("default_backend", _name)
    if backend is None:
        raise ConfigError(t.key("default_backend"), "required: the name of a backend")
    t.take("maxconn", _int(1, 10_000_000))
    t.take("backlog", _int(1, 65535))
    t.take("idle_timeout", parse_timeout)
    t.take("splice", _bool)
    del t.values["bind"]
    return _build(Frontend, t, name=name, binds=binds)


def _binds(value: object, path: str) -> tuple[Address, ...]:
    if isinstance(value, str):
        return (parse_address(value, path),)
    if isinstance(value, list) and value:
        return tuple(parse_address(v, f"{path}[{i}]") for i, v in enumerate(value))
    raise ConfigError(path, f'expected "host:port" or a non-empty list of them, got {value!r}')


def _parse_backend(name: str, t: _Table) -> Backend:
    t.take("balance", _choice(BALANCE_KINDS))
    t.take("connect_timeout", parse_timeout)
    t.take("retries", _int(0, 100))
    servers = t.take("servers", _servers)
    if not servers:
        raise ConfigError(t.key("servers"), "required: a non-empty list of servers")
    del t.values["servers"]
    return _build(Backend, t, name=name, servers=servers)


def _servers(value: object, path: str) -> tuple[Server, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list of servers, got {value!r}")
    servers = tuple(_server(v, f"{path}[{i}]") for i, v in enumerate(value))
    seen: dict[str, int] = {}
    for i, s in enumerate(servers):
        if s.name in seen:
            raise ConfigError(
                f"{path}[{i}]", f'duplicate server name "{s.name}" (also {path}[{seen[s.name]}])'
            )
        seen[s.name] = i
    return servers


def _server(value: object, path: str) -> Server:
    if isinstance(value, str):
        value = {"address": value}
    t = _Table(value, path)
    spec = t.take("address", _name)
    if spec is None:
        raise ConfigError(t.key("address"), 'required: "host:port"')
    address = parse_address(spec, t.key("address"), resolve=True)
    if address.port == 0:
        raise ConfigError(t.key("address"), f"a server needs a port other than 0: {spec!r}")
    t.take("weight", _int(0, MAX_WEIGHT))
    t.take("name", _name)
    t.values.pop("address")
    t.values.setdefault("name", spec)
    return _build(Server, t, address=address, spec=spec)


def _check_binds(frontends: dict[str, Frontend]) -> None:
    """Reject two listeners on one address, including a wildcard overlapping a literal."""
    seen: list[tuple[str, Address]] = []
    for fe in frontends.values():
        for i, addr in enumerate(fe.binds):
            path = fe.bind_path(i)
            if addr.port == 0:
                continue  # the kernel picks a distinct port for each
            for other, prev in seen:
                if _overlap(addr, prev):
                    raise ConfigError(path, f"{addr} overlaps {prev} bound by {other}")
            seen.append((path, addr))


def _overlap(a: Address, b: Address) -> bool:
    if a.port != b.port or a.family != b.family:
        return False
    return a.host == b.host or {a.host, b.host} & {"0.0.0.0", "::"} != set()
