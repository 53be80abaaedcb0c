"""A backend's runtime state inside one worker: its server slots, its balancer, and
the passive checks that leave a failing server out for a while.

Owns the order in which a connection tries servers (the balancer's pick, then the
next pick excluding the ones already tried, at most ``retries`` extra times), and the
ejections: ``eject_after`` consecutive failures of a server (refused or timed-out
connects, reported by whoever connects) take it out of the balancing for ``eject_for``
in this worker; then it is tried again, and a single failure takes it out again until
a success. On top, what the control process publishes for every worker (shared
memory, read once a tick): the active checks' verdicts, and the operator's state and
weight of each server (a drained server keeps its connections and gets no new ones: a
weight of 0 to the balancers). Pure logic: connecting is the caller's, the clock is
passed in, and the worker's sweeper calls ``restore`` and ``sync`` once a tick.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable, Iterator

from trilb.balance.algorithms import Balancer, ServerSlot, make_balancer
from trilb.config.schema import Backend
from trilb.control.shared import ADDRESS_SIZE, DRAIN, MAINT, READY, UP, decode_address
from trilb.obs.counters import S_FAILURES

log = logging.getLogger(__name__)


class BackendState:
    """Server slots and the balancer of one configured backend."""

    def __init__(self, config: Backend, rng: random.Random | None = None) -> None:
        self.config = config
        self.slots = [ServerSlot(index=i, name=s.name, weight=s.weight,
                                 address=None if s.dns else s.address)
                      for i, s in enumerate(config.servers)]  # fmt: skip
        # The address records of its dns: slots (control/shared.py), when it has some;
        # ``moved`` is told of a slot whose address changed (its pooled connections go).
        self.addresses = b"" if any(s.dns for s in config.servers) else None
        self.moved: Callable[[ServerSlot], None] | None = None
        self.balancer: Balancer = make_balancer(config.balance, self.slots, rng)
        # Only source hashing needs the client address as a key; others skip building it.
        self.hashes_source = config.balance == "source"
        # Consecutive failures per server, and the servers out until when.
        self.failures = [0] * len(self.slots)
        self.ejected: dict[int, float] = {}
        # The control process's view (all up, ready, configured weights without one):
        # the active checks' verdicts (1: up), the operator's states, the weights.
        self.health = bytes([UP]) * len(self.slots)
        self.admin = bytes([READY]) * len(self.slots)
        self.weights = [s.weight for s in config.servers]

    def sync(
        self, health: bytes, admin: bytes, weights: list[int], addresses: bytes | None = None
    ) -> None:
        """Take the control process's view: a server is in the balancing when its check
        says up, it is not in maintenance, no passive check has ejected it and it has an
        address; a drained one keeps its slot with a weight of 0, so nothing new is sent
        to it. ``addresses``: the records of a backend with dns: slots."""
        if addresses is not None and addresses != self.addresses:
            self._readdress(addresses)
        elif health == self.health and admin == self.admin and weights == self.weights:
            return
        self.health, self.admin, self.weights = health, admin, weights
        for slot in self.slots:
            self._refresh(slot)

    def _readdress(self, addresses: bytes) -> None:
        old = self.addresses or b""
        for slot in self.slots:
            if not self.config.servers[slot.index].dns:
                continue
            at = slot.index * ADDRESS_SIZE
            record = addresses[at : at + ADDRESS_SIZE]
            if record != old[at : at + ADDRESS_SIZE]:
                slot.address = decode_address(record)
                self.failures[slot.index] = 0
                self.ejected.pop(slot.index, None)  # (a new server: a clean slate)
                if self.moved is not None:
                    self.moved(slot)
        self.addresses = addresses

    def _refresh(self, slot: ServerSlot) -> None:
        i = slot.index
        state = self.admin[i]
        slot.up = (self.health[i] == UP and state != MAINT and i not in self.ejected
                   and slot.address is not None)  # fmt: skip
        slot.weight = 0 if state == DRAIN else self.weights[i]

    def failed(self, slot: ServerSlot, now: float, why: str) -> None:
        """A connection to ``slot`` failed (``why``, for the log)."""
        slot.counts[S_FAILURES] += 1
        self._failure(slot, now, why)

    def observed(self, slot: ServerSlot, status: int, now: float) -> None:
        """``slot`` answered with ``status`` (with ``eject_on_5xx``): a 5xx is a failure."""
        if status >= 500:
            self._failure(slot, now, f"HTTP {status}")
        elif self.failures[slot.index]:
            self.failures[slot.index] = 0

    def _failure(self, slot: ServerSlot, now: float, why: str) -> None:
        after = self.config.eject_after
        if not after:
            return
        count = self.failures[slot.index] = self.failures[slot.index] + 1
        if count >= after:
            self.eject(slot, now, self.config.eject_for, f"{count} failure"
                       f"{'s' if count > 1 else ''} in a row, the last: {why}")  # fmt: skip

    def succeeded(self, slot: ServerSlot) -> None:
        """A connection to ``slot`` was made."""
        if self.failures[slot.index]:
            self.failures[slot.index] = 0

    def eject(self, slot: ServerSlot, now: float, duration: float, why: str) -> None:
        """Leave ``slot`` out of the balancing until ``now + duration``."""
        if slot.index in self.ejected or not slot.up:
            return  # (already out: by an ejection, or by its health check)
        if not any(s.up and s.weight > 0 for s in self.slots if s is not slot):
            # The last server left: without it every request fails for ``duration``
            # even if it is back in a second (nginx ignores max_fails for a lone one).
            return
        slot.up = False
        self.ejected[slot.index] = now + duration
        log.warning("backend %s: server %s out for %gs: %s", self.config.name, slot.name,
                    duration, why)  # fmt: skip

    def restore(self, now: float) -> None:
        """Put back the servers whose ejection is over (the sweeper's chore)."""
        if not self.ejected:
            return
        for index, until in list(self.ejected.items()):
            if now >= until:
                del self.ejected[index]
                slot = self.slots[index]
                self._refresh(slot)
                # On probation: one more failure before a success takes it out again.
                self.failures[index] = max(self.config.eject_after - 1, 0)
                log.info("backend %s: server %s back in the balancing", self.config.name,
                         slot.name)  # fmt: skip

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
