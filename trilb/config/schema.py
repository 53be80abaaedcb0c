"""The configuration objects: frozen, slotted dataclasses, and the only place defaults live.

This module owns the shape of a loaded config and its defaults. It does not read files
or validate raw TOML: config/load.py turns TOML into these objects and reports errors
with key paths.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Mode = Literal["tcp", "udp", "http"]

# Every mode of the public contract (DESIGN.md); load_config rejects "udp" as not
# supported yet and accepts the others.
MODES: tuple[Mode, ...] = ("tcp", "udp", "http")


# The algorithms a backend may name. Key-based ones hash with a consistent-hash ring.
BALANCE_KINDS = ("roundrobin", "leastconn", "random", "source", "uri")
# Balance kinds that take a NAME after the prefix: "header:X-User", "cookie:session".
BALANCE_PREFIXES = ("header:", "cookie:")

# Why 256: a big enough range for relative weights (HAProxy allows 0..256); weight 0
# means "no new traffic" so an operator can park a server without removing it.
MAX_WEIGHT = 256
DNS_SLOTS = 8


def is_l7_balance(kind: str) -> bool:
    """True when ``kind`` hashes a part of an HTTP request (uri, header:NAME, cookie:NAME),
    so only backends reached from ``mode = "http"`` frontends may use it."""
    return kind == "uri" or kind.startswith(BALANCE_PREFIXES)


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
    # Required of every API and metrics request when set ("Authorization: Bearer ..."),
    # and required in the config for a bind that is not loopback.
    token: str = ""
    # True when the config has an [admin] table: only then is the endpoint served.
    requested: bool = False


@dataclass(frozen=True, slots=True)
class AccessLog:
    # "stdout", or a file (absolute once loaded) that SIGUSR1 reopens.
    path: str = "stdout"
    # "text" (HAProxy's httplog shape) or "json" (one object per line).
    format: str = "text"


@dataclass(frozen=True, slots=True)
class Dns:
    """How ``dns:NAME:PORT`` servers are re-resolved (by the control process)."""

    # "ip:port" of the DNS servers asked, in turn; empty: /etc/resolv.conf's.
    nameservers: tuple[Address, ...] = ()
    interval: float = 10.0
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    address: Address
    # The hostname or literal the config gave, kept for messages and re-resolution.
    spec: str
    weight: int = 1
    # A slot of a ``dns:NAME:PORT`` entry: NAME, re-resolved at [dns] interval; its
    # address (the unspecified one, with PORT) comes from the answers ("": a fixed one).
    dns: str = ""


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    servers: tuple[Server, ...]
    # One of BALANCE_KINDS, or "header:NAME" (NAME lowercased) or "cookie:NAME".
    balance: str = "roundrobin"
    connect_timeout: float = 5.0
    # Extra attempts on another server after a failed connect (HAProxy's default is 3).
    retries: int = 2
    # The rest applies when an http frontend uses the backend.
    # From the request's last byte sent to the response's first byte received: nginx's
    # proxy_read_timeout default, and HAProxy's usual `timeout server`.
    response_timeout: float = 60.0
    # Idle keep-alive connections kept per server and per worker (0: no reuse). Above
    # nginx's usual `keepalive 32`: HTTP/2 clients keep many requests in flight at once,
    # each on a backend connection of its own (HAProxy keeps idle ones without a cap).
    pool_max_idle: int = 128
    # Below the 5 s keep-alive timeout of Node.js and Apache httpd, so trilb closes an
    # idle connection before the server does and rarely reuses one that is closing
    # (HAProxy's pool-purge-delay is 5 s).
    pool_idle_timeout: float = 4.0
    # Connections (busy or idle) to one server per worker; 0 = unlimited, as HAProxy's
    # server maxconn and nginx's max_conns.
    pool_max_per_server: int = 0
    # TLS to the servers (http only; None: cleartext).
    tls: BackendTls | None = None
    # What an http frontend speaks to the servers: "http/1.1" (keep-alive pools), or "h2"
    # (multiplexed HTTP/2 connections, trailers end to end: gRPC), by prior knowledge in
    # cleartext, by ALPN over TLS.
    protocol: str = "http/1.1"
    # mode "tcp" frontends: a PROXY protocol header ("v1" or "v2") starts each connection
    # to a server, naming the client ("": none).
    send_proxy: str = ""
    # Passive checks, per worker: this many failed connects in a row (refused, timed
    # out) take a server out of the balancing for eject_for; 0: never. nginx's
    # max_fails / fail_timeout (1 and 10 s by default), Envoy's outlier detection.
    eject_after: int = 3
    eject_for: float = 10.0
    # http: a 5xx response counts as a failure too, and any other as a success (HAProxy's
    # observe layer7, nginx's proxy_next_upstream http_5xx counted by max_fails).
    eject_on_5xx: bool = False
    # The slots each ``dns:NAME:PORT`` server entry becomes (HAProxy's server-template):
    # the most addresses one name may give.
    dns_slots: int = DNS_SLOTS
    # Active health checks (None: none; servers are then up unless ejected).
    health: Health | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """A backend's active health check, run by the control process for all workers."""

    type: str = "tcp"  # "tcp": a connect; "http": a request and its status
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2  # consecutive passes that bring a down server up
    fall: int = 3  # consecutive failures that take an up server down
    # http only: what is asked, and the statuses that pass.
    path: str = "/"
    method: str = "GET"
    host: str | None = None  # the Host field; None: the server's address
    expect: tuple[int, ...] = (200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                               300, 301, 302, 303, 304, 307, 308)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BackendTls:
    """TLS from trilb to a backend's servers."""

    # CA certificates (PEM) to verify the servers against; None: the system's.
    ca: str | None = None
    # The name sent by SNI and checked in the server's certificate; None: the server's
    # host when it is a name (an IP literal is sent no SNI and checked as an address).
    sni: str | None = None
    # Off only for a test setup: without it anyone on the path can pose as the server.
    verify: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    """One ``[[frontends.NAME.routes]]`` entry of an http frontend.

    Every condition given must hold; an empty one (None or ``()``) is not checked.
    Text stays text here: l7/router.py turns it into the bytes it compares, once.
    """

    backend: str
    # Position in the frontend's routes list (from 0); -1 for the default route.
    index: int = -1
    # Lowercase, no port; "*.example.com" matches one or more labels before ".example.com".
    host: str | None = None
    path_prefix: str | None = None
    # Compiled at load; searched (not anchored) in the path without its query string.
    path_regex: re.Pattern[str] | None = None
    # Uppercase method names; any of them matches.
    methods: tuple[str, ...] = ()
    # (lowercase name, exact value) pairs.
    headers: tuple[tuple[str, str], ...] = ()
    # (name, exact value) pairs; cookie names are case-sensitive.
    cookies: tuple[tuple[str, str], ...] = ()
    # (name, value) pairs compared with the percent-decoded query arguments.
    query: tuple[tuple[str, str], ...] = ()
    # Plugin instances ([plugins.NAME]) for this route, run after the frontend's.
    plugins: tuple[str, ...] = ()


# TLS versions a frontend may require as its minimum; 1.0 and 1.1 are broken (RFC 8996).
TLS_VERSIONS = ("1.2", "1.3")
# Application protocols a TLS frontend may offer by ALPN, in the client's wire spelling;
# also what a backend's servers may be spoken to with.
ALPN_PROTOCOLS = ("h2", "http/1.1")
# Mozilla's "intermediate" suites for TLS 1.2 clients: forward-secret AEAD only, no CBC,
# RSA key exchange or SHA-1 MACs. (TLS 1.3 suites are OpenSSL's, all modern.)
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


@dataclass(frozen=True, slots=True)
class TlsCert:
    """One certificate of a TLS frontend; paths are absolute once loaded."""

    cert: str
    # The private key's file; the certificate's file when it holds both (HAProxy's way).
    key: str
    # The SNI names it serves ("*.example.com" matches one label); empty: the DNS names
    # of the certificate itself (its subjectAltName, else its common name).
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS termination on a frontend. The first certificate answers unknown names."""

    certs: tuple[TlsCert, ...]
    # Offered by ALPN in this order of preference.
    alpn: tuple[str, ...] = ("http/1.1",)
    min_version: str = "1.2"
    ciphers: str = TLS12_CIPHERS
    # The whole handshake must finish within this; HAProxy's `timeout client` bounds it
    # (often 30 s), nginx's client_header_timeout (60 s). A handshake is a few RTTs.
    handshake_timeout: float = 10.0
    # Resumption by session tickets, whose key all workers of a generation share.
    session_tickets: bool = True


@dataclass(frozen=True, slots=True)
class Limits:
    """A frontend's per-source admission (l4/limits.py), per worker like maxconn."""

    # Networks sources must be in (empty: any) and must not be in.
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    deny: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Connections open at once from one address; 0: no limit.
    max_conn_per_source: int = 0
    # New connections a second from one address (a token bucket); 0: no limit.
    rate_per_source: float = 0.0
    # The bucket's size: connections one address may open at once after a quiet time;
    # 0: rate_per_source (one second's worth, at least 1).
    burst_per_source: int = 0


@dataclass(frozen=True, slots=True)
class WebSocket:
    """How an http frontend proxies WebSocket connections once upgraded."""

    # No byte in either direction for this long: the connection closes. HAProxy's
    # `timeout tunnel` is commonly 1 h for WebSocket; nginx's 60 s read timeout closes
    # quiet but healthy applications, the usual complaint.
    idle_timeout: float = 3600.0
    # 0: frames are relayed as bytes (the fast path). Above 0: messages are parsed on
    # both sides (wsproto) and a larger one closes the connection with 1009.
    max_message_size: int = 0
    # 0: off. Else trilb pings the client after this much silence; a client that does
    # not answer within idle_timeout is closed.
    ping_interval: float = 0.0

    @property
    def messages(self) -> bool:
        """Whether messages are parsed (otherwise frames pass as bytes)."""
        return self.max_message_size > 0


@dataclass(frozen=True, slots=True)
class Frontend:
    name: str
    mode: Mode
    binds: tuple[Address, ...]
    default_backend: str
    # Per frontend and per worker: the worker stops accepting (the kernel queues) above it.
    maxconn: int = 10000
    backlog: int = 1024
    # Each connection starts with a PROXY protocol header (v1 or v2) from a balancer in
    # front, whose client address trilb then uses; it must come within the timeout.
    accept_proxy: bool = False
    accept_proxy_timeout: float = 5.0
    # The balancers allowed to send one (networks; empty: anyone who reaches the port,
    # so firewall it): a header from anyone else would let them claim any client.
    accept_proxy_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Per-source allow/deny lists and limits (None: none).
    limits: Limits | None = None
    # mode "udp" only: flows (client addresses) per worker; above it the least recently
    # active one is closed. Each flow holds a socket (a file descriptor).
    max_flows: int = 10000
    # mode "tcp" only --------------------------------------------------------------
    # A TCP connection with no byte in either direction for this long is closed.
    idle_timeout: float = 300.0
    # Relay bulk transfers with os.splice (kernel zero-copy); false: recv/send only.
    splice: bool = True
    # mode "http" only -------------------------------------------------------------
    # First match wins; no match goes to default_backend.
    routes: tuple[Route, ...] = ()
    # The whole request head must arrive within this (slowloris); HAProxy's usual
    # `timeout http-request 10s` (nginx's client_header_timeout is 60 s).
    header_timeout: float = 10.0
    # Longest silence of the client while a body moves: its request body, or its reading
    # of our response (nginx: client_body_timeout and send_timeout).
    body_timeout: float = 60.0
    # Idle time allowed between two requests of a connection; between HAProxy's usual
    # `timeout http-keep-alive` and nginx's keepalive_timeout (75 s), as cloud LBs use.
    keepalive_timeout: float = 60.0
    # Above it: 414. nginx's large_client_header_buffers holds a line in 8 KiB.
    max_request_line: int = 8192
    # The header block above it: 431. nginx's 4 x 8 KiB header buffers.
    max_header_size: int = 32768
    # More header fields than this: 431. HAProxy's tune.http.maxhdr is 101.
    max_headers: int = 100
    # HTTP/2 streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS;
    # more are refused): HAProxy's tune.h2.max-concurrent-streams default.
    max_concurrent_streams: int = 100
    # TLS termination (None: cleartext).
    tls: Tls | None = None
    # A body above it: 413; 0 = unlimited, as HAProxy (nginx's client_max_body_size is
    # 1 MiB, too small for a general-purpose balancer).
    max_body_size: int = 0
    websocket: WebSocket = field(default_factory=WebSocket)
    # Plugin instances ([plugins.NAME]) every request of this frontend meets, in order.
    plugins: tuple[str, ...] = ()

    @property
    def backend_names(self) -> set[str]:
        """Every backend it sends to: its default one and its routes'."""
        return {self.default_backend, *(r.backend for r in self.routes)}

    def bind_path(self, i: int) -> str:
        """The key path of ``binds[i]`` as the user wrote it (a string or a list)."""
        return f"frontends.{self.name}.bind" + (f"[{i}]" if len(self.binds) > 1 else "")


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """One ``[plugins.NAME]`` table: which plugin class, with which settings."""

    name: str
    # What ``type`` said (the table's name by default), and what it resolved to: a
    # trilb.plugin.Plugin subclass and an instance of its Settings dataclass.
    type: str
    cls: Any
    settings: Any


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    global_: Global = field(default_factory=Global)
    admin: Admin = field(default_factory=Admin)
    # One line per HTTP request and per TCP connection (None: no access log).
    access_log: AccessLog | None = None
    dns: Dns = field(default_factory=Dns)
    frontends: Mapping[str, Frontend] = field(default_factory=lambda: MappingProxyType({}))
    backends: Mapping[str, Backend] = field(default_factory=lambda: MappingProxyType({}))
    plugins: Mapping[str, PluginSpec] = field(default_factory=lambda: MappingProxyType({}))

    def summary(self) -> str:
        servers = sum(len(b.servers) for b in self.backends.values())
        workers = "auto" if self.global_.workers is None else str(self.global_.workers)
        return (
            f"{len(self.frontends)} frontend(s), {len(self.backends)} backend(s), "
            f"{servers} server(s), workers={workers}"
        )
