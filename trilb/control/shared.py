"""The health states every process of a generation shares: one byte per checked server
in an anonymous shared mapping the master makes before forking.

The control process writes a server's byte when its check changes state; workers read
the bytes once per sweeper tick (no lock, no syscall: a byte is written and read
whole). A generation has its own mapping, laid out from its config, so a reload that
changes the servers never mixes layouts. Pure mmap: the master imports it, never trio.
"""

from __future__ import annotations

import mmap

from trilb.config.schema import Config

UP = 1
DOWN = 0


class SharedHealth:
    """The up/down byte of each server of each backend that has a health check."""

    def __init__(self, config: Config) -> None:
        # backend name -> the offset of its first server's byte
        self.offsets: dict[str, int] = {}
        size = 0
        for backend in config.backends.values():
            if backend.health is not None:
                self.offsets[backend.name] = size
                size += len(backend.servers)
        self.size = size
        # MAP_SHARED | MAP_ANONYMOUS: forked children see the same pages.
        self.buf = mmap.mmap(-1, max(size, 1))
        self.buf.write(bytes([UP]) * size)  # servers start up, as HAProxy's do

    def inherit(self, old: SharedHealth, old_config: Config, config: Config) -> None:
        """Take ``old``'s verdicts for each backend whose servers are the same (a reload:
        a server known down must not get traffic again until its checks say so)."""
        for name, start in self.offsets.items():
            before = old_config.backends.get(name)
            if name not in old.offsets or before is None:
                continue
            servers = [s.name for s in config.backends[name].servers]
            if [s.name for s in before.servers] == servers:
                self.buf[start : start + len(servers)] = old.states(name, len(servers))

    def set(self, backend: str, index: int, up: bool) -> None:
        self.buf[self.offsets[backend] + index] = UP if up else DOWN

    def states(self, backend: str, count: int) -> bytes:
        """The bytes of ``backend``'s ``count`` servers."""
        start = self.offsets[backend]
        return self.buf[start : start + count]

    def close(self) -> None:
        self.buf.close()
