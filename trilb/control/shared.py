"""What every process of a generation shares: each server's health verdict, operator
state and weight, and each worker's counters, in one anonymous shared mapping the
master makes before forking.

Layout, from the generation's config (so a reload that changes the servers never mixes
layouts): one health byte per server (1: up), one admin byte per server (ready, drain,
maint), one u32 weight per server, one address record per server (``ADDRESS_SIZE``
bytes: a ``dns:`` server's current address, written by the control process's
resolver), the ``resolved`` byte (the control process's first lookups are over), then
one block of u64 counters per worker slot: each server's (obs/counters.py
``SERVER_COUNTERS``), then each frontend's.

Every field has one writer: the control process writes health (its checks), the
admin bytes and weights (the admin API) and the addresses (its resolver); a worker
writes only its own counter block. Readers take the values once a tick without a lock:
a byte or an aligned word is written whole, and a counter read mid-update is a tick
stale at worst. An address record (20 bytes) is written empty first, then its address,
then its family byte, so a reader sees either no address or a whole one. Pure mmap: the
master imports it, never trio.
"""

from __future__ import annotations

import mmap
import socket

from trilb.config.schema import Address, Backend, Config, Server
from trilb.obs.counters import FRONTEND_COUNTERS, SERVER_COUNTERS

UP = 1
DOWN = 0
# A server's operator state (the admin API's): ready takes traffic; drain keeps the
# connections it has and gets no new ones; maint is out, as a failed check.
READY = 0
DRAIN = 1
MAINT = 2
ADMIN_STATES = ("ready", "drain", "maint")
# An address record: family (0: none, 4, 6), a pad byte, port (big endian), 16 bytes.
ADDRESS_SIZE = 20
# The longest the first lookups of a generation's dns: entries are waited for: by its
# control process before it says ready (the master gives a generation 15 s in all), by
# its workers before they accept (at a first start: no server to send to before).
FIRST_LOOKUP_WAIT = 5.0


def encode_address(address: Address | None) -> bytes:
    if address is None:
        return bytes(ADDRESS_SIZE)
    six = ":" in address.host
    packed = socket.inet_pton(socket.AF_INET6 if six else socket.AF_INET, address.host)
    return bytes([6 if six else 4, 0]) + address.port.to_bytes(2, "big") + packed.ljust(16, b"\0")


def decode_address(record: bytes) -> Address | None:
    family = record[0]
    if family not in (4, 6):
        return None
    port = int.from_bytes(record[2:4], "big")
    if family == 4:
        return Address(socket.inet_ntop(socket.AF_INET, record[4:8]), port)
    return Address(socket.inet_ntop(socket.AF_INET6, record[4:20]), port)


def dns_entries(backend: Backend) -> dict[str, list[int]]:
    """A backend's dns: entries (their specs) and the server slots each one became."""
    entries: dict[str, list[int]] = {}
    for index, server in enumerate(backend.servers):
        if server.dns:
            entries.setdefault(server.spec, []).append(index)
    return entries


def _align(n: int) -> int:
    return (n + 7) & ~7


class SharedState:
    """The generation's shared mapping, with views by backend, server and worker."""

    def __init__(self, config: Config, workers: int) -> None:
        # backend name -> the index of its first server among all servers
        self.first: dict[str, int] = {}
        self.counts: dict[str, int] = {}  # backend name -> its number of servers
        servers = 0
        for backend in config.backends.values():
            self.first[backend.name] = servers
            self.counts[backend.name] = len(backend.servers)
            servers += len(backend.servers)
        self.servers = servers
        self.frontends = {name: i for i, name in enumerate(config.frontends)}
        self.workers = workers
        self.block = servers * SERVER_COUNTERS + len(self.frontends) * FRONTEND_COUNTERS
        weights_at = _align(2 * servers)
        addresses_at = _align(weights_at + 4 * servers)
        resolved_at = addresses_at + ADDRESS_SIZE * servers
        counters_at = _align(resolved_at + 1)
        size = counters_at + 8 * self.block * workers
        # MAP_SHARED | MAP_ANONYMOUS: forked children see the same pages.
        self.buf = mmap.mmap(-1, max(size, 8))
        view = memoryview(self.buf)
        self.health = view[:servers]
        self.admin = view[servers : 2 * servers]
        self.weights = view[weights_at : weights_at + 4 * servers].cast("I")
        self.addresses = view[addresses_at : addresses_at + ADDRESS_SIZE * servers]
        self.counters = view[counters_at:size].cast("Q")
        self.resolved = view[resolved_at : resolved_at + 1]
        self._views = [view, self.health, self.admin, self.weights, self.addresses, self.counters,
                       self.resolved]  # fmt: skip
        self.health[:] = bytes([UP]) * servers  # servers start up, as HAProxy's do
        for backend in config.backends.values():
            start = self.first[backend.name]
            for i, server in enumerate(backend.servers):
                self.weights[start + i] = server.weight
                if not server.dns:  # (a dns: slot has none until its name resolves)
                    self.set_address(backend.name, i, server.address)

    def inherit(self, old: SharedState, old_config: Config, config: Config) -> None:
        """Take what ``old`` knows of each server the reload keeps (same backend, name
        and address or dns: name): its check's verdict (a server known down gets no
        traffic until its checks say so), the operator's state (a drained one stays
        drained), a dns: slot's address, and a weight the API set, unless the config
        changed that server's weight (the file's word is newer then)."""
        size = ADDRESS_SIZE
        for at, j, weight, server in self._kept(old_config, config, old):
            self.health[at] = old.health[j]
            self.admin[at] = old.admin[j]
            if weight == server.weight:
                self.weights[at] = old.weights[j]
            if server.dns:
                self.addresses[at * size : (at + 1) * size] = old.addresses[
                    j * size : (j + 1) * size
                ]

    def replay(self, old: SharedState, old_config: Config, config: Config, seen: bytes) -> None:
        """The operator's changes ``old`` took after this generation inherited from it
        (``seen``: ``old.operator()`` then): during a reload's hand-over the old control
        process may still have answered the API."""
        admin, weights = seen[: old.servers], memoryview(seen[old.servers :]).cast("I")
        for at, j, _, _ in self._kept(old_config, config, old):
            if old.admin[j] != admin[j]:
                self.admin[at] = old.admin[j]
            if old.weights[j] != weights[j]:
                self.weights[at] = old.weights[j]

    def operator(self) -> bytes:
        """The operator's part (admin bytes, weights), for a later ``replay``."""
        return bytes(self.admin) + bytes(self.weights)

    def _kept(
        self, old_config: Config, config: Config, old: SharedState
    ) -> list[tuple[int, int, int, Server]]:
        """The servers both configs have (same backend, name and address or dns:
        name): (index here, index in ``old``, its old config weight, the server)."""
        out = []
        for name, start in self.first.items():
            before = old_config.backends.get(name)
            if before is None:
                continue
            was = {(s.name, s.spec): (old.first[name] + i, s.weight)
                   for i, s in enumerate(before.servers)}  # fmt: skip
            for i, server in enumerate(config.backends[name].servers):
                found = was.get((server.name, server.spec))
                if found is not None:
                    out.append((start + i, found[0], found[1], server))
        return out

    # --- per server --------------------------------------------------------------

    def set_health(self, backend: str, index: int, up: bool) -> None:
        self.health[self.first[backend] + index] = UP if up else DOWN

    def set_admin(self, backend: str, index: int, state: int) -> None:
        self.admin[self.first[backend] + index] = state

    def set_weight(self, backend: str, index: int, weight: int) -> None:
        self.weights[self.first[backend] + index] = weight

    def set_address(self, backend: str, index: int, address: Address | None) -> None:
        at = (self.first[backend] + index) * ADDRESS_SIZE
        record = encode_address(address)
        self.addresses[at : at + ADDRESS_SIZE] = bytes(ADDRESS_SIZE)
        self.addresses[at + 1 : at + ADDRESS_SIZE] = record[1:]
        self.addresses[at] = record[0]

    def address(self, backend: str, index: int) -> Address | None:
        at = (self.first[backend] + index) * ADDRESS_SIZE
        return decode_address(bytes(self.addresses[at : at + ADDRESS_SIZE]))

    def awaiting_dns(self, config: Config) -> bool:
        """Some dns: entry has no address at all, and the control process's first lookups
        are not over."""
        if self.resolved[0]:
            return False
        return any(
            self.unresolved(backend.name, slots)
            for backend in config.backends.values()
            for slots in dns_entries(backend).values()
        )

    def unresolved(self, backend: str, slots: list[int]) -> bool:
        """No slot of a dns: entry has an address."""
        return all(self.address(backend, i) is None for i in slots)

    def backend_addresses(self, backend: str) -> bytes:
        """``backend``'s address records, one after the other."""
        start = self.first[backend] * ADDRESS_SIZE
        return bytes(self.addresses[start : start + self.counts[backend] * ADDRESS_SIZE])

    def server_state(self, backend: str) -> tuple[bytes, bytes, list[int]]:
        """``backend``'s servers: health bytes, admin bytes, weights."""
        start = self.first[backend]
        end = start + self.counts[backend]
        return bytes(self.health[start:end]), bytes(self.admin[start:end]), \
            self.weights[start:end].tolist()  # fmt: skip

    # --- counters ----------------------------------------------------------------

    def server_offset(self, backend: str, index: int) -> int:
        """Where a server's counters start inside a worker's block."""
        return (self.first[backend] + index) * SERVER_COUNTERS

    def frontend_offset(self, frontend: str) -> int:
        return self.servers * SERVER_COUNTERS + self.frontends[frontend] * FRONTEND_COUNTERS

    def worker_block(self, slot: int) -> memoryview:
        """Worker ``slot``'s counters (its own to write)."""
        return self.counters[slot * self.block : (slot + 1) * self.block]

    def totals(self) -> list[int]:
        """Every counter summed over the workers (a block's layout)."""
        total = [0] * self.block
        for slot in range(self.workers):
            for i, value in enumerate(self.worker_block(slot)):
                if value:
                    total[i] += value
        return total

    def close(self) -> None:
        for view in reversed(self._views):
            view.release()
        self.buf.close()
