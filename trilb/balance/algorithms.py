"""Choosing one server of a backend: round-robin, least-connections, power-of-two, hashing.

This module owns the selection algorithms, the per-worker runtime view of a server
(ServerSlot), the Balancer seam and its factory. It deliberately does not own health
(health/ flips ``up``), connection counting (the caller increments and decrements
``active`` around each connection), key extraction (l4 passes the client IP, l7 the URI,
header or cookie), or retries (the caller passes the servers it already tried as
``exclude``). Pure logic: no trio, no sockets, no I/O.

Every balancer reads ``up``, ``weight`` and ``active`` at pick time, because other code
mutates the slots in place; nothing is cached from them except the hash ring, which is
built once from names and configured weights.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from trilb.balance.hashing import HashRing
from trilb.config.schema import Address
from trilb.obs.counters import server_counts

# The balance kinds that hash a caller-supplied key; "header:" and "cookie:" need a NAME.
_KEY_KINDS = ("source", "uri")
_NAMED_KEY_PREFIXES = ("header:", "cookie:")


@dataclass(slots=True)
class ServerSlot:
    """Mutable runtime view of one server inside one worker."""

    index: int  # position in the backend's server list
    name: str  # stable identity (used for the hash ring, so adding a server remaps ~1/N keys)
    weight: int  # effective weight; 0 = no new traffic
    up: bool = True  # False = marked down (by health checks or an operator); never picked
    active: int = 0  # current connections held by this worker (caller increments/decrements)
    # This worker's counters of the server (obs/counters.py), published once a tick.
    counts: list[int] = field(default_factory=server_counts)
    # Where to connect: the configured address, or a dns: slot's current one (None:
    # none yet, and the slot is not up).
    address: Address | None = None


class Balancer(Protocol):
    """Picks a server for each new connection or request."""

    def pick(self, key: bytes | None = None, exclude: Collection[int] = ()) -> ServerSlot | None:
        """Choose a server that is up, has weight > 0, and whose index is not in `exclude`
        (the servers a retry loop already tried). None when no server qualifies."""
        ...


def _eligible(slot: ServerSlot, exclude: Collection[int]) -> bool:
    return slot.up and slot.weight > 0 and slot.index not in exclude


def _lighter(a: ServerSlot, b: ServerSlot) -> bool:
    """True when `a` would be strictly less loaded than `b` after taking one more connection.

    Compares (active + 1) / weight by cross-multiplying, so no float rounding and no
    division. The "+ 1" (HAProxy's leastconn does the same) scores the load *after* this
    pick: with weights 3 and 1 and nobody connected, the heavier server wins instead of
    tying, and a server at 1/3 beats an idle weight-1 server it would otherwise lose to.
    """
    return (a.active + 1) * b.weight < (b.active + 1) * a.weight


class RoundRobin:
    """Smooth weighted round-robin, nginx's algorithm.

    Each pick adds every eligible server's weight to its running score, takes the highest
    score and subtracts the eligible total from it. Weights 5, 1, 1 give a, a, b, a, c, a, a:
    the heavy server's turns are spread through the cycle rather than sent in a burst, and
    over any cycle of sum(weights) picks each server is chosen exactly weight times.
    """

    __slots__ = ("_current", "_servers")

    def __init__(self, servers: Sequence[ServerSlot]) -> None:
        self._servers = tuple(servers)
        # Scores are kept by position, not by slot.index, so the list stays dense.
        self._current = [0] * len(self._servers)

    def pick(self, key: bytes | None = None, exclude: Collection[int] = ()) -> ServerSlot | None:
        servers = self._servers
        if len(servers) == 1:  # a backend of one server (common): nothing to weigh
            only = servers[0]
            return only if _eligible(only, exclude) else None
        current = self._current
        total = 0
        best = -1
        best_score = 0
        for pos, slot in enumerate(self._servers):
            if not _eligible(slot, exclude):
                continue
            score = current[pos] + slot.weight
            current[pos] = score
            total += slot.weight
            # Strict ">" keeps the first of equal scores, which is what makes the 5,1,1
            # sequence deterministic (b before c).
            if best < 0 or score > best_score:
                best = pos
                best_score = score
        if best < 0:
            return None
        current[best] -= total
        return self._servers[best]


class LeastConn:
    """Lowest (active + 1) / weight among eligible servers.

    Ties are broken by rotating the scan's starting point past the last server chosen, so
    equally loaded servers take turns. Without that, short connections that finish before
    the next pick would all land on the first server of the list.
    """

    __slots__ = ("_servers", "_start")

    def __init__(self, servers: Sequence[ServerSlot]) -> None:
        self._servers = tuple(servers)
        self._start = 0

    def pick(self, key: bytes | None = None, exclude: Collection[int] = ()) -> ServerSlot | None:
        servers = self._servers
        count = len(servers)
        start = self._start
        best: ServerSlot | None = None
        best_pos = 0
        for step in range(count):
            pos = start + step
            if pos >= count:
                pos -= count
            slot = servers[pos]
            if not _eligible(slot, exclude):
                continue
            if best is None or _lighter(slot, best):
                best = slot
                best_pos = pos
        if best is not None:
            self._start = best_pos + 1 if best_pos + 1 < count else 0
        return best


class PowerOfTwo:
    """Power-of-two choices: draw two distinct servers by weight, keep the less loaded one.

    Sampling by weight sends proportionally more traffic to heavy servers; comparing load
    between just two candidates avoids the herd effect of every worker sending its next
    connections to the same globally least-loaded server, at O(n) per pick and no state.
    The most loaded eligible server is never picked while another is eligible, because
    the two candidates are always distinct.
    """

    __slots__ = ("_rng", "_servers")

    def __init__(self, servers: Sequence[ServerSlot], rng: random.Random) -> None:
        self._servers = tuple(servers)
        self._rng = rng

    def pick(self, key: bytes | None = None, exclude: Collection[int] = ()) -> ServerSlot | None:
        total = 0
        for slot in self._servers:
            if _eligible(slot, exclude):
                total += slot.weight
        if total == 0:
            return None
        first = self._nth(self._rng.randrange(total), exclude, None)
        if first.weight == total:
            # The only eligible server: there is no second candidate to compare with.
            return first
        second = self._nth(self._rng.randrange(total - first.weight), exclude, first)
        return second if _lighter(second, first) else first

    def _nth(self, target: int, exclude: Collection[int], skip: ServerSlot | None) -> ServerSlot:
        """The eligible server (other than `skip`) covering weight unit `target`."""
        last: ServerSlot | None = None
        for slot in self._servers:
            if slot is skip or not _eligible(slot, exclude):
                continue
            if target < slot.weight:
                return slot
            target -= slot.weight
            last = slot
        # Unreachable while the caller's total matches the slots; a slot mutated between
        # the two passes (not possible in one worker's synchronous pick) would land here.
        assert last is not None
        return last


class ConsistentHash:
    """Key-based affinity over a consistent-hash ring (source, uri, header:*, cookie:*).

    The same key goes to the same server while that server is eligible. When it is down,
    excluded or at weight 0, the key walks clockwise to the next eligible server, so only
    that server's keys move and they come back when it does. A missing key (None: no such
    header or cookie) falls back to smooth round-robin, as HAProxy does.
    """

    __slots__ = ("_fallback", "_ring", "_servers")

    def __init__(self, servers: Sequence[ServerSlot]) -> None:
        self._servers = tuple(servers)
        # A server configured at weight 0 still gets one unit of points: it is skipped at
        # pick time while parked, and an operator can un-park it without a ring rebuild.
        self._ring = HashRing([(s.name, max(s.weight, 1)) for s in self._servers])
        self._fallback = RoundRobin(self._servers)

    def pick(self, key: bytes | None = None, exclude: Collection[int] = ()) -> ServerSlot | None:
        if key is None:
            return self._fallback.pick(None, exclude)
        ring = self._ring
        if not ring:
            return None
        point = ring.locate(key)
        slot = self._servers[ring.owner(point)]
        if _eligible(slot, exclude):
            return slot
        return self._walk(point, exclude)

    def _walk(self, point: int, exclude: Collection[int]) -> ServerSlot | None:
        """The first eligible server clockwise after ring point `point`, or None."""
        servers = self._servers
        # Without an eligible server the walk would circle the whole ring; one scan of
        # the (much shorter) server list answers that first.
        if not any(_eligible(slot, exclude) for slot in servers):
            return None
        ring = self._ring
        size = len(ring)
        for step in range(1, size):
            candidate = point + step
            if candidate >= size:
                candidate -= size
            slot = servers[ring.owner(candidate)]
            if _eligible(slot, exclude):
                return slot
        return None  # Every server owns points, so an eligible one is always met first.


def make_balancer(
    kind: str, servers: Sequence[ServerSlot], rng: random.Random | None = None
) -> Balancer:
    """Build the balancer a backend's ``balance`` setting names.

    Args:
      kind: "roundrobin" | "leastconn" | "random" | "source" | "uri" | "header:NAME" |
        "cookie:NAME". The key-based kinds (source, uri, header:*, cookie:*) all use the
        consistent-hash balancer; the caller supplies the key (client IP bytes for
        source; the l7 layer extracts the others).
      servers: the backend's slots, in list order; they are shared, not copied, so
        changes to ``up``, ``weight`` and ``active`` are seen by the next pick.
      rng: randomness for "random"; a fresh unseeded Random when None (tests seed one).

    Returns:
      A Balancer whose pick() is synchronous and allocation-light.

    Raises:
      ValueError: `kind` is not one of the above, or a header/cookie NAME is empty.
    """
    if kind == "roundrobin":
        return RoundRobin(servers)
    if kind == "leastconn":
        return LeastConn(servers)
    if kind == "random":
        return PowerOfTwo(servers, rng if rng is not None else random.Random())
    if kind in _KEY_KINDS or any(
        kind.startswith(prefix) and len(kind) > len(prefix) for prefix in _NAMED_KEY_PREFIXES
    ):
        return ConsistentHash(servers)
    raise ValueError(f"unknown balance kind {kind!r}")
