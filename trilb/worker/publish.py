"""A worker's side of the shared mapping (control/shared.py), a sweeper chore: once a
tick it takes the control process's view of every server (health, operator state,
weight) and publishes its own counters into its block.

The hot paths count into plain lists (the slots' and frontends' ``counts``); only this
chore touches shared memory, so a request pays no syscall and no lock for being
counted, and the figures the control process shows are at most a tick old.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Protocol

from trilb.balance.backend import BackendState
from trilb.config.schema import Frontend
from trilb.control.shared import SharedState
from trilb.obs.counters import F_ACTIVE, FRONTEND_COUNTERS, S_ACTIVE, SERVER_COUNTERS


class Counted(Protocol):
    """A frontend as this chore sees it: its config, counters and open connections
    (or flows)."""

    config: Frontend
    counts: list[int]

    @property
    def active(self) -> int: ...


class Publisher:
    """Publishes one worker's counters; takes the control process's server states."""

    def __init__(
        self,
        shared: SharedState,
        slot: int,
        states: Sequence[BackendState],
        frontends: Sequence[Counted],
    ) -> None:
        self.shared = shared
        self.block = shared.worker_block(slot)
        self.states = states
        self.frontends = frontends
        # A backend used by both L4 and L7 frontends has a state for each: their
        # counters are summed into one place.
        seen: set[str] = set()
        self.shared_backends = False
        for state in states:
            name = state.config.name
            self.shared_backends |= name in seen
            if name not in seen:
                seen.add(name)
                # A respawned worker goes on from what its predecessor published, so
                # the sums never go down (Prometheus reads a drop as a restart).
                for slot_ in state.slots:
                    at = shared.server_offset(name, slot_.index)
                    slot_.counts[:] = self.block[at : at + SERVER_COUNTERS].tolist()
                    slot_.counts[S_ACTIVE] = 0
        for fe in frontends:
            at = shared.frontend_offset(fe.config.name)
            fe.counts[:] = self.block[at : at + FRONTEND_COUNTERS].tolist()
            fe.counts[F_ACTIVE] = 0

    def __call__(self, now: float = 0.0) -> None:
        shared, block = self.shared, self.block
        for state in self.states:
            name = state.config.name
            addresses = None if state.addresses is None else _addresses(shared, name)
            state.sync(*shared.server_state(name), addresses)
        sums: dict[int, list[int]] = {}
        for state in self.states:
            name = state.config.name
            for slot in state.slots:
                counts = slot.counts
                counts[S_ACTIVE] = max(slot.active, 0)  # (a slip must not kill the worker)
                at = shared.server_offset(name, slot.index)
                if self.shared_backends:
                    total = sums.get(at)
                    if total is not None:
                        counts = [a + b for a, b in zip(total, counts, strict=True)]
                    sums[at] = counts
                block[at : at + SERVER_COUNTERS] = array("Q", counts)
        for fe in self.frontends:
            counts = fe.counts
            counts[F_ACTIVE] = max(fe.active, 0)
            at = shared.frontend_offset(fe.config.name)
            block[at : at + FRONTEND_COUNTERS] = array("Q", counts)


def _addresses(shared: SharedState, backend: str) -> bytes:
    """The backend's address records, read until two reads agree: the control process
    may be writing one (a torn record is never taken for an address)."""
    records = shared.backend_addresses(backend)
    for _ in range(3):
        again = shared.backend_addresses(backend)
        if again == records:
            break
        records = again
    return records
