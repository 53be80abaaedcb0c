"""Idle timeouts for relayed connections, checked by one sweeper task per worker.

A deadline per syscall would cost a cancel-scope update on every chunk relayed.
Instead each connection exposes a byte counter; the sweeper looks at every counter
once per tick and cancels a connection whose counter has not moved for its idle
timeout. Precision is one tick, which is what an idle timeout needs. This module owns
the sweep only; what a connection does when cancelled is its owner's business.
"""

from __future__ import annotations

import trio

from trilb.l4.pump import Traffic

# The longest a sweep waits: idle timeouts are seconds to minutes, and a tick costs
# one pass over the open connections.
MAX_TICK = 1.0


class Watched:
    """One connection under watch."""

    __slots__ = ("idle", "last_seen", "scope", "since", "traffic")

    def __init__(self, traffic: Traffic, scope: trio.CancelScope, idle: float, now: float) -> None:
        self.traffic = traffic
        self.scope = scope
        self.idle = idle
        self.last_seen = traffic.total
        self.since = now


class IdleSweeper:
    """Cancels connections that moved no byte for their idle timeout."""

    def __init__(self, tick: float = MAX_TICK) -> None:
        self.tick = tick
        self.watched: set[Watched] = set()

    def watch(self, traffic: Traffic, scope: trio.CancelScope, idle: float) -> Watched:
        w = Watched(traffic, scope, idle, trio.current_time())
        self.watched.add(w)
        return w

    def unwatch(self, w: Watched) -> None:
        self.watched.discard(w)

    def sweep(self, now: float) -> int:
        """Cancel the idle ones; returns how many were cancelled."""
        cancelled = 0
        for w in self.watched:
            total = w.traffic.total
            if total != w.last_seen:
                w.last_seen = total
                w.since = now
            elif now - w.since >= w.idle and not w.scope.cancel_called:
                w.scope.cancel()
                cancelled += 1
        return cancelled

    async def serve(self) -> None:
        while True:
            await trio.sleep(self.tick)
            self.sweep(trio.current_time())
