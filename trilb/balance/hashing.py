"""The consistent-hash ring: placing servers' points by name and weight, locating a key.

This module owns ring construction and key lookup. It deliberately knows nothing about
ServerSlot, health or exclusion: it maps a key to a ring point and a point to the
position of the server that owns it; balance/algorithms.py walks the ring past servers
that cannot take traffic.

Theory of operation
-------------------
Each server gets points proportional to its weight (Karger et al.'s virtual nodes,
ketama's 160 per server), and a key belongs to the first point at or after its hash,
wrapping at the top. Points come from blake2b, not hash(): Python salts str hashing per
process, and every worker (and every trilb host behind one VIP) must agree on the ring.

Points are derived from the server's *name* alone, in a prefix-stable order: point k is
the same whatever the other servers are. Adding a server therefore only inserts points,
and only keys landing on those new points move (about 1/(N+1) of them, all to the new
server); removing one only moves the keys it owned. One 64-byte blake2b digest yields
eight 64-bit points, so hashing is a small part of building even a large ring.

Weights up to 256 on a few hundred servers would ask for millions of points, so the
points per weight unit shrink once the ring would pass MAX_RING_POINTS. Past that budget
a server added or removed also trims or extends every server's point list by the same
fraction, which at worst doubles the keys that move; below it the remap is minimal.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from array import array
from collections.abc import Sequence

# Why 160: ketama's figure; a server's share of the ring strays from its weight's share by
# about 1/sqrt(points), 8% here, and 200 weight-1 servers still fit MAX_RING_POINTS.
POINTS_PER_WEIGHT = 160

# Why 2**15: a worker builds rings when it starts and on reload, between requests, so a
# build must not stall it: a full ring builds in ~50 ms on a slow core (mostly the sort)
# and costs ~0.4 MB. That still gives 200 weight-1 servers 160 points each and 400 of
# them 82, five times HAProxy's 16 per weight unit. A ten-server backend needs 1,600.
MAX_RING_POINTS = 1 << 15

# Little-endian explicitly, so a ring is identical on every host, not just every worker.
_DIGEST = struct.Struct("<8Q")
_KEY = struct.Struct("<Q")
_OWNER_MASK = (1 << 32) - 1


def key_hash(key: bytes) -> int:
    """The 64-bit ring position of a key."""
    return int(_KEY.unpack(hashlib.blake2b(key, digest_size=8).digest())[0])


def _server_points(name: str, count: int) -> list[int]:
    """The first `count` ring positions of server `name`, in a prefix-stable order."""
    points: list[int] = []
    block = 0
    while len(points) < count:
        # NUL cannot occur in the decimal block number, so the last NUL splits name and
        # block unambiguously: distinct (name, block) pairs never hash the same bytes.
        digest = hashlib.blake2b(f"{name}\0{block}".encode()).digest()
        points.extend(_DIGEST.unpack(digest))
        block += 1
    del points[count:]
    return points


def _points_per_weight(weights: Sequence[int]) -> float:
    total = sum(weights)
    if total == 0:
        return 0.0
    return min(float(POINTS_PER_WEIGHT), MAX_RING_POINTS / total)


class HashRing:
    """A sorted ring of (position, owner) points built once from names and weights.

    Args:
      servers: (name, weight) per server, in the backend's order; owners are positions
        in this sequence. A weight of 0 gives the server no points. Names should be
        unique: two servers with one name share points and the first always wins them.
    """

    __slots__ = ("_owners", "_positions")

    def __init__(self, servers: Sequence[tuple[str, int]]) -> None:
        scale = _points_per_weight([weight for _, weight in servers])
        # Each point is packed as position << 32 | owner: sorting plain ints is about twice
        # as fast as sorting (position, owner) tuples, and ties (a 2**-64 event) still
        # break by owner, so every worker builds the same ring.
        packed: list[int] = []
        for owner, (name, weight) in enumerate(servers):
            if weight <= 0:
                continue
            # At least one point, so a light server in a huge backend is still reachable.
            count = max(1, round(weight * scale))
            packed.extend([position << 32 | owner for position in _server_points(name, count)])
        packed.sort()
        # array("Q") stores 8 bytes per point instead of a boxed int and a list slot.
        self._positions = array("Q", [point >> 32 for point in packed])
        self._owners = array("I", [point & _OWNER_MASK for point in packed])

    def __len__(self) -> int:
        return len(self._positions)

    def locate(self, key: bytes) -> int:
        """The index of the first ring point at or after `key`'s hash, wrapping at the top.

        Raises:
          IndexError: the ring is empty.
        """
        if not self._positions:
            raise IndexError("hash ring is empty")
        point = bisect.bisect_left(self._positions, key_hash(key))
        return point if point < len(self._positions) else 0

    def owner(self, point: int) -> int:
        """The server position (index into the constructor's sequence) owning `point`."""
        return self._owners[point]
