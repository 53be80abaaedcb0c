"""Active health checks: the rise/fall state of one server (sans I/O) and the probes
(a TCP connect; an HTTP request and its status line, over TLS when the backend uses it).

The control process (control/main.py) runs one loop per checked server; what a state
change does (the shared byte, the log line) is its business.
"""

from __future__ import annotations

import random
import ssl

import trio

from trilb.config.schema import Address, Backend, Health, Server
from trilb.tls import sni_name

_MAX_STATUS_LINE = 1024


class CheckState:
    """Rise/fall of one server: ``fall`` failures in a row take an up server down,
    ``rise`` passes in a row bring a down one up."""

    __slots__ = ("count", "fall", "rise", "up")

    def __init__(self, health: Health) -> None:
        self.up = True
        self.count = 0  # consecutive results against the current state
        self.rise = health.rise
        self.fall = health.fall

    def record(self, passed: bool) -> bool:
        """One check's result; True when the state changed."""
        if passed == self.up:
            self.count = 0
            return False
        self.count += 1
        if self.count >= (self.rise if passed else self.fall):
            self.up = passed
            self.count = 0
            return True
        return False


def jittered(interval: float, rng: random.Random) -> float:
    """The interval ±10%: checks of many servers do not fire together."""
    return interval * rng.uniform(0.9, 1.1)


async def probe(
    backend: Backend, server: Server, tls: ssl.SSLContext | None, address: Address | None = None
) -> str | None:
    """Run the backend's check on ``server`` (at ``address``: a dns: slot's current one)
    within its timeout; None when it passed, else why not."""
    health = backend.health
    assert health is not None
    with trio.move_on_after(health.timeout):
        try:
            return await _probe(health, server, tls, backend, address or server.address)
        except (OSError, trio.BrokenResourceError) as exc:
            # trio wraps a TLS failure: the log line says the certificate error itself.
            cause = exc.__cause__ or exc
            return getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return f"no answer within {health.timeout:g}s"


async def _probe(
    health: Health, server: Server, tls: ssl.SSLContext | None, backend: Backend, address: Address
) -> str | None:
    stream: trio.abc.Stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        if health.type == "tcp":
            return None
        if tls is not None and backend.tls is not None:  # (the name the data path sends)
            stream = trio.SSLStream(stream, tls, server_hostname=sni_name(backend.tls, server.spec))
            await stream.do_handshake()
        host = health.host or (f"[{address.host}]" if ":" in address.host else address.host)
        request = (f"{health.method} {health.path} HTTP/1.1\r\nHost: {host}\r\n"
                   "Connection: close\r\nUser-Agent: trilb-health-check\r\n\r\n")  # fmt: skip
        await stream.send_all(request.encode("latin-1"))
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some(_MAX_STATUS_LINE)
            if not chunk:
                return "closed before a status line"
            head += chunk
            if len(head) > _MAX_STATUS_LINE:
                return "no status line"
        line = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
            return f"not an HTTP status line: {head[:60]!r}"
        status = int(line[1])
        return None if status in health.expect else f"status {status}"
