"""Reading a TOML file into a validated, frozen Config.

This module owns validation: unknown keys, wrong types, references between tables
(every backend a frontend or route names exists, and an L7 balance kind is only used
behind mode "http"), duplicate binds. Every error names the file, the dotted key path
and what was expected. The keys and routes only http frontends have are read by
config/http.py. Defaults are not written here: a key left out keeps the dataclass
default of config/schema.py. Socket-level checks (a port already taken) belong to
master/sockets.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

from trilb.config.health import parse_health
from trilb.config.http import HTTP_ONLY, TCP_ONLY, parse_balance, parse_http_keys
from trilb.config.limits import parse_limits, parse_networks
from trilb.config.plugins import check_plugin_references, parse_plugin, parse_plugin_list
from trilb.config.schema import (
    ALPN_PROTOCOLS,
    DNS_SLOTS,
    MAX_WEIGHT,
    MODES,
    AccessLog,
    Address,
    Admin,
    Backend,
    Config,
    Dns,
    Frontend,
    Global,
    Server,
    is_l7_balance,
)
from trilb.config.table import Table
from trilb.config.tls import parse_backend_tls
from trilb.config.values import (
    parse_address,
    parse_bool,
    parse_choice,
    parse_duration,
    parse_int,
    parse_name,
    parse_timeout,
)
from trilb.control.dns import A, build_query
from trilb.errors import ConfigError

T = TypeVar("T")

_LOG_LEVELS = ("debug", "info", "warning", "error")
# The modes load_config accepts.
_LOADED_MODES = ("tcp", "udp", "http")
# A UDP flow that long without a datagram ends: a DNS or game flow is over in seconds,
# and each open flow holds a socket (a TCP idle_timeout of 5 minutes would pile them).
UDP_IDLE_TIMEOUT = 30.0


def _workers(value: object, path: str) -> int | None:
    if value == "auto":
        return None
    return parse_int(1, 1024)(value, path)


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
        workers = parse_int(1, 1024)(workers, "--workers")
        config = replace(config, global_=replace(config.global_, workers=workers))
    if log_level is not None:
        log_level = parse_choice(_LOG_LEVELS)(log_level, "--log-level")
        config = replace(config, global_=replace(config.global_, log_level=log_level))
    return config


def parse_config(raw: dict[str, Any], source: str = "<string>") -> Config:
    """Validate an already-parsed TOML document (see load_config)."""
    top = Table(raw, "")
    glob = _parse_global(top.take("global", Table))
    # Relative file names (certificates) start from the config file's directory.
    base = os.getcwd() if source == "<string>" else os.path.dirname(os.path.abspath(source))
    admin = _parse_admin(top.take("admin", Table), base)
    access_log = _parse_access_log(top.take("access_log", Table), base)
    dns = _parse_dns(top.take("dns", Table))
    plugins = _parse_tables(top.take("plugins", Table), parse_plugin)
    backends = _parse_tables(top.take("backends", Table), partial(_parse_backend, base=base))
    frontends = _parse_tables(top.take("frontends", Table), partial(_parse_frontend, base=base))
    top.finish()
    if not frontends:
        raise ConfigError("frontends", "at least one frontend is required")
    for fe in frontends.values():
        _check_references(fe, backends)
        check_plugin_references(fe, plugins, backends)
    _check_binds(frontends)
    return Config(
        source=source,
        global_=glob,
        admin=admin,
        access_log=access_log,
        dns=dns,
        frontends=MappingProxyType(frontends),
        backends=MappingProxyType(backends),
        plugins=MappingProxyType(plugins),
    )


def _check_references(fe: Frontend, backends: Mapping[str, Backend]) -> None:
    """Every backend a frontend names exists and balances by what the frontend has."""
    uses = [(f"frontends.{fe.name}.default_backend", fe.default_backend)]
    uses += [(f"frontends.{fe.name}.routes[{r.index}].backend", r.backend) for r in fe.routes]
    for path, name in uses:
        backend = backends.get(name)
        if backend is None:
            known = ", ".join(f'"{b}"' for b in backends) or "none defined"
            raise ConfigError(path, f'unknown backend "{name}" (backends: {known})')
        if fe.mode != "http" and (backend.tls is not None or backend.protocol != "http/1.1"):
            what = "tls" if backend.tls is not None else f'protocol "{backend.protocol}"'
            raise ConfigError(path, f'backend "{name}" has {what}, which needs mode "http" '
                              f'(this frontend is mode "{fe.mode}")')  # fmt: skip
        if fe.mode == "udp" and backend.health is not None:
            raise ConfigError(path, f'backend "{name}" has a health check, which this version '
                              "does not run for UDP servers")  # fmt: skip
        if fe.mode == "udp" and backend.send_proxy:
            raise ConfigError(path, f'backend "{name}" has send_proxy, which this version does '
                              'not send over UDP')  # fmt: skip
        if fe.mode == "http" and backend.send_proxy:
            raise ConfigError(path, f'backend "{name}" has send_proxy, which this version sends '
                              'only for mode "tcp" frontends (an http frontend names the '
                              "client in X-Forwarded-For)")  # fmt: skip
        if fe.mode != "http" and is_l7_balance(backend.balance):
            raise ConfigError(
                path,
                f'backend "{name}" balances by "{backend.balance}", which needs '
                f'mode "http" (this frontend is mode "{fe.mode}")',
            )


def _parse_tables(table: Table | None, parse: Callable[[str, Table], T]) -> dict[str, T]:
    if table is None:
        return {}
    out = {}
    for key in table.raw:
        out[key] = parse(key, Table(table.raw[key], table.key(key)))
        table.used.add(key)
    return out


def _parse_global(t: Table | None) -> Global:
    if t is None:
        return Global()
    t.take("workers", _workers)
    t.take("grace", parse_duration)
    t.take("log_level", parse_choice(_LOG_LEVELS))
    return t.build(Global)


def _parse_admin(t: Table | None, base: str) -> Admin:
    if t is None:
        return Admin()
    bind = t.take("bind", parse_address) or Admin().bind
    token = t.take("token", _parse_token)
    path = t.take("token_file", _parse_text)
    if token is not None and path is not None:
        raise ConfigError(t.key("token_file"), "give token or token_file, not both")
    if path is not None:
        t.values.pop("token_file")
        full = os.path.join(base, path)
        try:
            with open(full, encoding="utf-8") as f:
                token = _parse_token(f.read().strip(), t.key("token_file"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(t.key("token_file"), f"cannot read {full}: {exc}") from None
        t.values["token"] = token
    if not token and not ipaddress.ip_address(bind.host).is_loopback:
        why = "loopback address: anyone who reaches it could drain servers"
        raise ConfigError(t.key("token"), f"required when admin.bind ({bind}) is not a {why}")
    return t.build(Admin, requested=True)


def _parse_access_log(t: Table | None, base: str) -> AccessLog | None:
    if t is None:
        return None
    path = t.take("path", _parse_text)
    t.take("format", parse_choice(("text", "json")))
    if path is not None and path != "stdout":
        full = os.path.join(base, path)
        if not os.path.isdir(os.path.dirname(full)):
            raise ConfigError(t.key("path"), f"no directory {os.path.dirname(full)!r} for {path!r}")
        t.values["path"] = full
    return t.build(AccessLog)


def _parse_text(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a non-empty string, got {value!r}")
    return value


def _parse_token(value: object, path: str) -> str:
    """A bearer token: 16 to 512 visible ASCII characters (it travels in a field)."""
    if not isinstance(value, str) or not 16 <= len(value) <= 512:
        raise ConfigError(path, "expected a string of 16 to 512 characters")
    if not all("!" <= ch <= "~" for ch in value):
        raise ConfigError(path, "expected visible ASCII characters only (no spaces)")
    return value


def _parse_frontend(name: str, t: Table, base: str) -> Frontend:
    mode = t.take("mode", parse_choice(MODES))
    if mode is None:
        raise ConfigError(t.key("mode"), 'required: "tcp", "udp" or "http"')
    if mode not in _LOADED_MODES:
        supported = ", ".join(_LOADED_MODES)
        raise ConfigError(
            t.key("mode"), f'mode "{mode}" is not supported yet (supported: {supported})'
        )
    binds = t.take("bind", _binds)
    if binds is None:
        raise ConfigError(t.key("bind"), 'required: an address "host:port" or a list of them')
    backend = t.take("default_backend", parse_name)
    if backend is None:
        raise ConfigError(t.key("default_backend"), "required: the name of a backend")
    t.take("limits", parse_limits)
    if mode == "udp":
        t.refuse(("maxconn", "backlog", "accept_proxy", "accept_proxy_timeout",
                  "accept_proxy_from", "splice", "plugins"), 'not for mode "udp"')  # fmt: skip
        t.refuse(HTTP_ONLY, 'only for mode "http"')
        t.take("max_flows", parse_int(1, 10_000_000))
        if t.take("idle_timeout", parse_timeout) is None:
            t.values["idle_timeout"] = UDP_IDLE_TIMEOUT
        del t.values["bind"]
        return t.build(Frontend, name=name, binds=binds)
    t.refuse(("max_flows",), 'only for mode "udp"')
    t.take("maxconn", parse_int(1, 10_000_000))
    t.take("backlog", parse_int(1, 65535))
    t.take("accept_proxy", parse_bool)
    t.take("accept_proxy_timeout", parse_timeout)
    if t.take("accept_proxy_from", parse_networks) and not t.values.get("accept_proxy"):
        raise ConfigError(t.key("accept_proxy_from"), "needs accept_proxy = true")
    if mode == "http":
        t.refuse(TCP_ONLY, 'only for mode "tcp"')
        parse_http_keys(t, base)
    else:
        t.refuse(HTTP_ONLY, 'only for mode "http"')
        t.take("idle_timeout", parse_timeout)
        t.take("splice", parse_bool)
        t.take("plugins", parse_plugin_list)  # (their on_connect only)
    del t.values["bind"]
    return t.build(Frontend, name=name, binds=binds)


def _binds(value: object, path: str) -> tuple[Address, ...]:
    if isinstance(value, str):
        return (parse_address(value, path),)
    if isinstance(value, list) and value:
        return tuple(parse_address(v, f"{path}[{i}]") for i, v in enumerate(value))
    raise ConfigError(path, f'expected "host:port" or a non-empty list of them, got {value!r}')


def _parse_backend(name: str, t: Table, base: str) -> Backend:
    t.take("balance", parse_balance)
    t.take("tls", lambda v, p: parse_backend_tls(v, p, base))
    t.take("protocol", parse_choice(ALPN_PROTOCOLS))
    t.take("send_proxy", parse_choice(("v1", "v2")))
    t.take("health", parse_health)
    t.take("eject_after", parse_int(0, 1000))
    t.take("eject_for", parse_timeout)
    t.take("eject_on_5xx", parse_bool)
    slots = t.take("dns_slots", parse_int(1, 256)) or DNS_SLOTS
    t.take("connect_timeout", parse_timeout)
    t.take("retries", parse_int(0, 100))
    t.take("response_timeout", parse_timeout)
    t.take("pool_max_idle", parse_int(0, 100_000))
    t.take("pool_idle_timeout", parse_timeout)
    t.take("pool_max_per_server", parse_int(0, 10_000_000))
    servers = t.take("servers", partial(_servers, slots=slots))
    if not servers:
        raise ConfigError(t.key("servers"), "required: a non-empty list of servers")
    del t.values["servers"]
    return t.build(Backend, name=name, servers=servers)


def _servers(value: object, path: str, slots: int) -> tuple[Server, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list of servers, got {value!r}")
    servers = tuple(s for i, v in enumerate(value) for s in _server(v, f"{path}[{i}]", slots))
    seen: dict[str, int] = {}
    for i, s in enumerate(servers):
        if s.name in seen:
            raise ConfigError(
                f"{path}[{i}]", f'duplicate server name "{s.name}" (also {path}[{seen[s.name]}])'
            )
        seen[s.name] = i
    return servers


def _server(value: object, path: str, slots: int) -> list[Server]:
    """One server, or a ``dns:NAME:PORT`` entry's ``slots`` servers."""
    if isinstance(value, str):
        value = {"address": value}
    t = Table(value, path)
    spec = t.take("address", parse_name)
    if spec is None:
        raise ConfigError(t.key("address"), 'required: "host:port"')
    if spec.startswith("dns:"):
        return _dns_slots(t, spec, slots)
    address = parse_address(spec, t.key("address"), resolve=True)
    if address.port == 0:
        raise ConfigError(t.key("address"), f"a server needs a port other than 0: {spec!r}")
    t.take("weight", parse_int(0, MAX_WEIGHT))
    t.take("name", parse_name)
    t.values.pop("address")
    t.values.setdefault("name", spec)
    return [t.build(Server, address=address, spec=spec)]


def _dns_slots(t: Table, spec: str, slots: int) -> list[Server]:
    """``dns:NAME:PORT``: ``slots`` servers named NAME-1.. (or the given name), whose
    addresses the control process fills from NAME's A and AAAA records."""
    name, _, port = spec[4:].rpartition(":")
    if not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(t.key("address"), f'expected "dns:NAME:PORT", got {spec!r}')
    try:
        build_query(name, A, 0)
    except ValueError as exc:
        raise ConfigError(t.key("address"), f"{spec!r}: {exc}") from None
    weight = t.take("weight", parse_int(0, MAX_WEIGHT))
    base = t.take("name", parse_name) or name.rstrip(".")
    t.finish()
    empty = Address("0.0.0.0", int(port))
    # (The spec without "dns:": the name a TLS backend sends as SNI, as for "host:port".)
    return [Server(f"{base}-{i + 1}", empty, spec[4:], 1 if weight is None else weight,
                   dns=name.rstrip(".").lower()) for i in range(slots)]  # fmt: skip


def _parse_dns(t: Table | None) -> Dns:
    if t is None:
        return Dns()
    t.take("nameservers", _nameservers)
    t.take("interval", parse_timeout)
    t.take("timeout", parse_timeout)
    return t.build(Dns)


def _nameservers(value: object, path: str) -> tuple[Address, ...]:
    """A list of "ip" or "ip:port" (53 by default)."""
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f'expected a non-empty list of "ip:port", got {value!r}')
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{path}[{i}]", f'expected "ip:port", got {item!r}')
        bare = item.count(":") != 1 and not item.startswith("[")  # (IPv4 or bare IPv6)
        text = (f"[{item}]:53" if ":" in item else f"{item}:53") if bare else item
        out.append(parse_address(text, f"{path}[{i}]"))
    return tuple(out)


def _check_binds(frontends: dict[str, Frontend]) -> None:
    """Reject two listeners on one address, including a wildcard overlapping a literal
    (a UDP and a TCP listener may share one: they are different ports to the kernel)."""
    seen: list[tuple[str, Address, bool]] = []
    for fe in frontends.values():
        udp = fe.mode == "udp"
        for i, addr in enumerate(fe.binds):
            path = fe.bind_path(i)
            if addr.port == 0:
                continue  # the kernel picks a distinct port for each
            for other, prev, prev_udp in seen:
                if prev_udp == udp and _overlap(addr, prev):
                    raise ConfigError(path, f"{addr} overlaps {prev} bound by {other}")
            seen.append((path, addr, udp))


def _overlap(a: Address, b: Address) -> bool:
    if a.port != b.port or a.family != b.family:
        return False
    return a.host == b.host or {a.host, b.host} & {"0.0.0.0", "::"} != set()
