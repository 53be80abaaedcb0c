"""What the admin API tells of a running generation: frontends, backends and servers
with their states, counters, rates and latency quantiles, as plain data (the JSON of
/api and /stats, the source of /metrics).

The counters come summed over the workers (control/shared.py ``totals``); rates and
latency quantiles come from the difference between two such samples (``Window``),
so they describe the last seconds, not the process's life. Pure: no trio, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from trilb.config.schema import Address, Config, Server
from trilb.control.shared import ADMIN_STATES, DRAIN, MAINT, UP, SharedState
from trilb.obs.counters import (
    CLASSES,
    F_1XX,
    F_ACTIVE,
    F_BYTES_IN,
    F_BYTES_OUT,
    F_CONNECTIONS,
    F_REFUSED,
    FRONTEND_COUNTERS,
    S_1XX,
    S_ACTIVE,
    S_BUCKETS,
    S_BYTES_IN,
    S_BYTES_OUT,
    S_FAILURES,
    S_TOTAL,
    SERVER_COUNTERS,
    quantile,
)

# How far back rates and latency quantiles look.
WINDOW = 10.0


@dataclass(frozen=True, slots=True)
class Check:
    """A server's last active check."""

    ok: bool
    detail: str
    at: float  # monotonic


class Window:
    """Samples of the summed counters, the last ``WINDOW`` seconds of them."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, list[int]]] = deque()

    def add(self, now: float, totals: list[int]) -> None:
        self.samples.append((now, totals))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW:
            self.samples.popleft()

    def oldest(self) -> tuple[float, list[int]] | None:
        return self.samples[0] if len(self.samples) > 1 else None

    def previous(self) -> tuple[float, list[int]] | None:
        """The sample before the last: requests per second are over the last tick."""
        return self.samples[-2] if len(self.samples) > 1 else None


def state_name(health: int, admin: int, checked: bool) -> str:
    """A server's effective state: maint and drain (the operator's) before down."""
    if admin == MAINT:
        return "maint"
    if checked and health != UP:
        return "down"
    if admin == DRAIN:
        return "drain"
    return "up"


def snapshot(
    config: Config,
    shared: SharedState,
    totals: list[int],
    window: Window,
    now: float,
    checks: dict[tuple[str, int], Check],
) -> dict[str, Any]:
    """Frontends and backends as /api shows them (``now``: the monotonic clock)."""
    prev = window.previous()
    oldest = window.oldest()
    return {
        "frontends": [
            _frontend(config, shared, name, totals, prev, now) for name in config.frontends
        ],
        "backends": [
            _backend(config, shared, name, totals, prev, oldest, now, checks)
            for name in config.backends
        ],
    }


def _rate(now: float, value: int, prev: tuple[float, list[int]] | None, at: int) -> float:
    if prev is None or now <= prev[0]:
        return 0.0
    return round(max(value - prev[1][at], 0) / (now - prev[0]), 2)


def _frontend(
    config: Config,
    shared: SharedState,
    name: str,
    totals: list[int],
    prev: tuple[float, list[int]] | None,
    now: float,
) -> dict[str, Any]:
    fe = config.frontends[name]
    at = shared.frontend_offset(name)
    c = totals[at : at + FRONTEND_COUNTERS]
    responses = c[F_1XX : F_1XX + 5]
    out: dict[str, Any] = {
        "name": name,
        "mode": fe.mode,
        "bind": [str(b) for b in fe.binds],
        "backend": fe.default_backend,
        "active": c[F_ACTIVE],
        "connections": c[F_CONNECTIONS],
        "refused": c[F_REFUSED],
        "requests": sum(responses),
        "responses": dict(zip(CLASSES, responses, strict=True)),
        "bytes_in": c[F_BYTES_IN],
        "bytes_out": c[F_BYTES_OUT],
    }
    if prev is not None and now > prev[0]:
        before = prev[1][at + F_1XX : at + F_1XX + 5]
        out["rate"] = round(max(sum(responses) - sum(before), 0) / (now - prev[0]), 2)
    else:
        out["rate"] = 0.0
    return out


def _backend(
    config: Config,
    shared: SharedState,
    name: str,
    totals: list[int],
    prev: tuple[float, list[int]] | None,
    oldest: tuple[float, list[int]] | None,
    now: float,
    checks: dict[tuple[str, int], Check],
) -> dict[str, Any]:
    backend = config.backends[name]
    health, admin, weights = shared.server_state(name)
    checked = backend.health is not None
    modes = {fe.mode for fe in config.frontends.values() if name in fe.backend_names}
    servers = []
    for i, server in enumerate(backend.servers):
        at = shared.server_offset(name, i)
        c = totals[at : at + SERVER_COUNTERS]
        buckets = c[S_BUCKETS:]
        if oldest is not None:  # the latency of the last seconds, not of all time
            old = oldest[1][at + S_BUCKETS : at + SERVER_COUNTERS]
            buckets = [a - b for a, b in zip(buckets, old, strict=True)]
        check = checks.get((name, i))
        p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
        servers.append({
            "name": server.name,
            # A dns: slot's current address (None: its name gave it none).
            "address": str(addr) if (addr := _address(shared, name, i, server)) else None,
            "state": state_name(health[i], admin[i], checked),
            "admin": ADMIN_STATES[admin[i]],
            "health": ("up" if health[i] == UP else "down") if checked else None,
            "check": None if check is None else {
                "ok": check.ok, "detail": check.detail, "age": round(now - check.at, 1)},
            "weight": weights[i],
            "active": c[S_ACTIVE],
            "requests": c[S_TOTAL],
            "rate": _rate(now, c[S_TOTAL], prev, at + S_TOTAL),
            "responses": dict(zip(CLASSES, c[S_1XX : S_1XX + 5], strict=True)),
            "failures": c[S_FAILURES],
            "bytes_in": c[S_BYTES_IN],
            "bytes_out": c[S_BYTES_OUT],
            "latency": {"p50": None if p50 is None else round(p50, 6),
                        "p99": None if p99 is None else round(p99, 6)},
        })  # fmt: skip
    return {
        "name": name,
        # What its frontends speak: http (requests), else tcp or udp (connections).
        "mode": "http" if "http" in modes else min(modes, default="tcp"),
        "balance": backend.balance,
        "servers_up": sum(s["state"] == "up" for s in servers),
        "servers": servers,
    }


def _address(shared: SharedState, backend: str, index: int, server: Server) -> Address | None:
    return shared.address(backend, index) if server.dns else server.address
