"""Per-source admission on a frontend, sans I/O: allow and deny lists of networks, the
most concurrent connections of one source address, and its new-connection rate.

Owns the decision for one new connection and the per-source state behind it, in one
worker (like ``maxconn``, the numbers are per worker: SO_REUSEPORT spreads a source's
connections over the workers). The state is an entry per source with a connection
open or a rate bucket not yet full again; entries that hold nothing are dropped as
sweeps find them, so a scan of many addresses does not grow the table without bound.
The rate is a token bucket: ``rate_per_source`` tokens a second, at most
``burst_per_source`` saved, one taken per connection.
"""

from __future__ import annotations

import ipaddress

from trilb.config.schema import Limits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A sweep of idle entries runs after this many admissions.
SWEEP_EVERY = 1024


class Matcher:
    """Whether an address is inside any of some networks (IPv4 and IPv6)."""

    __slots__ = ("v4", "v6")

    def __init__(self, networks: tuple[Network, ...]) -> None:
        # (first, last) integer ranges per family: a comparison per network, no objects.
        self.v4 = [(int(n.network_address), int(n.broadcast_address))
                   for n in networks if n.version == 4]  # fmt: skip
        self.v6 = [(int(n.network_address), int(n.broadcast_address))
                   for n in networks if n.version == 6]  # fmt: skip

    def __contains__(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        value = int(address)
        ranges = self.v4 if address.version == 4 else self.v6
        return any(first <= value <= last for first, last in ranges)


def parse_source(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of ``ip`` as the lists see it: an IPv4-mapped IPv6 address (a client
    of a dual-stack listener) is its IPv4 address; None if it is not an address."""
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])  # (no zone index)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class SourceLimits:
    """One frontend's per-source limits in one worker."""

    __slots__ = ("allow", "burst", "deny", "entries", "max_conn", "rate", "until_sweep")

    def __init__(self, config: Limits) -> None:
        self.allow = Matcher(config.allow) if config.allow else None
        self.deny = Matcher(config.deny) if config.deny else None
        self.max_conn = config.max_conn_per_source
        self.rate = config.rate_per_source
        self.burst = float(config.burst_per_source or max(config.rate_per_source, 1.0))
        # source -> [open connections, tokens, when the tokens were counted]
        self.entries: dict[str, list[float]] = {}
        self.until_sweep = SWEEP_EVERY

    def admit(self, ip: str, now: float) -> str | None:
        """Count a new connection from ``ip``; or the reason it is refused (then it is
        not counted)."""
        if self.allow is not None or self.deny is not None:
            address = parse_source(ip)
            if address is None:
                return "not an IP address"  # (a UNIX socket: no list can say yes)
            if self.allow is not None and address not in self.allow:
                return "not in allow"
            if self.deny is not None and address in self.deny:
                return "in deny"
        if not self.max_conn and not self.rate:
            return None
        self.until_sweep -= 1
        if self.until_sweep <= 0:
            self.sweep(now)
        entry = self.entries.get(ip)
        if entry is None:
            entry = self.entries[ip] = [0, self.burst, now]
        if self.max_conn and entry[0] >= self.max_conn:
            return f"over max_conn_per_source ({self.max_conn})"
        if self.rate:
            tokens = min(self.burst, entry[1] + (now - entry[2]) * self.rate)
            entry[2] = now
            if tokens < 1.0:
                entry[1] = tokens
                return f"over rate_per_source ({self.rate:g}/s)"
            entry[1] = tokens - 1.0
        entry[0] += 1
        return None

    def release(self, ip: str) -> None:
        """A connection ``admit`` counted has ended."""
        entry = self.entries.get(ip)
        if entry is not None and entry[0] > 0:
            entry[0] -= 1
            if not entry[0] and not self.rate:
                del self.entries[ip]

    def sweep(self, now: float) -> None:
        """Drop the entries that hold nothing: no connection, and a full bucket."""
        self.until_sweep = SWEEP_EVERY
        rate, burst = self.rate, self.burst
        idle = [ip for ip, (count, tokens, when) in self.entries.items()
                if not count and (not rate or tokens + (now - when) * rate >= burst)]  # fmt: skip
        for ip in idle:
            del self.entries[ip]
