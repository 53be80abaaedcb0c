"""The configuration objects: frozen, slotted dataclasses, and the only place defaults live.

This module owns the shape of a loaded config and its defaults. It does not read files
or validate raw TOML: config/load.py turns TOML into these objects and reports errors
with key paths.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Mode = Literal["tcp", "udp", "http"]

# The algorithms a backend may name. Key-based ones hash with a consistent-hash ring.
BALANCE_KINDS = ("roundrobin", "leastconn", "random", "source")

# Why 256: a big enough range for relative weights (HAProxy allows 0..256); weight 0
# means "no new traffic" so an operator can park a server without removing it.
MAX_WEIGHT = 256


@dataclass(frozen=True, slots=True)
class Address:
    """An IP socket address. ``host`` is a literal IPv4 or IPv6 address (no brackets)."""

    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def sockaddr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Global:
    # None means "auto": one worker per CPU the process may run on.
    workers: int | None = 1
    # How long in-flight connections may finish after a stop or a reload.
    grace: float = 30.0
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class Admin:
    bind: Address = Address("127.0.0.1", 8404)
    # True when the config has an [admin] table (the admin API is not served yet).
    requested: bool = False


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    address: Address
    # The hostname or literal the config gave, kept for messages and re-resolution.
    spec: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    servers: tuple[Server, ...]
    balance: str = "roundrobin"
    connect_timeout: float = 5.0
    # Extra attempts on another server after a failed connect (HAProxy's default is 3).
    retries: int = 2


@dataclass(frozen=True, slots=True)
class Frontend:
    name: str
    mode: Mode
    binds: tuple[Address, ...]
    default_backend: str
    # Per frontend and per worker: the worker stops accepting (the kernel queues) above it.
    maxconn: int = 10000
    backlog: int = 1024
    # A TCP connection with no byte in either direction for this long is closed.
    idle_timeout: float = 300.0
    # Relay bulk transfers with os.splice (kernel zero-copy); false: recv/send only.
    splice: bool = True

    def bind_path(self, i: int) -> str:
        """The key path of ``binds[i]`` as the user wrote it (a string or a list)."""
        return f"frontends.{self.name}.bind" + (f"[{i}]" if len(self.binds) > 1 else "")


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    global_: Global = field(default_factory=Global)
    admin: Admin = field(default_factory=Admin)
    frontends: Mapping[str, Frontend] = field(default_factory=lambda: MappingProxyType({}))
    backends: Mapping[str, Backend] = field(default_factory=lambda: MappingProxyType({}))

    def summary(self) -> str:
        servers = sum(len(b.servers) for b in self.backends.values())
        workers = "auto" if self.global_.workers is None else str(self.global_.workers)
        return (
            f"{len(self.frontends)} frontend(s), {len(self.backends)} backend(s), "
            f"{servers} server(s), workers={workers}"
        )
