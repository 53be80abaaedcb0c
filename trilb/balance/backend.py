"""A backend's runtime state inside one worker: its server slots and its balancer.

Owns the order in which a connection tries servers (the balancer's pick, then the
next pick excluding the ones already tried, at most ``retries`` extra times). Pure
logic: connecting is the caller's. Health states will come from shared memory later;
today a slot's ``up`` flag is only changed by whoever owns the slot.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

from trilb.balance.algorithms import Balancer, ServerSlot, make_balancer
from trilb.config.schema import Backend


class BackendState:
    """Server slots and the balancer of one configured backend."""

    def __init__(self, config: Backend, rng: random.Random | None = None) -> None:
        self.config = config
        self.slots = [
            ServerSlot(index=i, name=s.name, weight=s.weight) for i, s in enumerate(config.servers)
        ]
        self.balancer: Balancer = make_balancer(config.balance, self.slots, rng)
        # Only source hashing needs the client address as a key; others skip building it.
        self.hashes_source = config.balance == "source"

    def attempts(self, key: bytes | None) -> Iterator[ServerSlot]:
        """The servers to try for one connection, best first, each at most once."""
        tried: set[int] = set()
        for _ in range(self.config.retries + 1):
            slot = self.balancer.pick(key, tried)
            if slot is None:
                return
            tried.add(slot.index)
            yield slot


def source_key(host: str) -> bytes:
    """The packed client address, the key of ``source`` hashing (a scope id dropped)."""
    host = host.partition("%")[0]
    return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
