"""Per-connection timeouts without cancel scopes: one sweeper task per worker.

A trio cancel scope per connection (or worse, a deadline per syscall) costs more
than the rest of a short connection's Python work. Instead:

- idle timeout: each relayed connection exposes a byte counter; the sweeper looks at
  every counter once per tick and aborts a connection whose counter has not moved for
  its idle timeout;
- connect timeout: a connecting socket is registered with its deadline; past it, the
  sweeper wakes the waiting task with trio.lowlevel.notify_closing, which makes its
  wait raise ClosedResourceError (l4/connect.py turns that into a timeout).

Precision is one tick, which is what these timeouts need. This module owns the sweep;
what an aborted connection does is its owner's business.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from functools import partial
from typing import Protocol

import trio

from trilb.l4.pump import Traffic

log = logging.getLogger(__name__)

# The longest a sweep waits: idle timeouts are seconds to minutes, and a tick costs
# one pass over the open connections.
MAX_TICK = 1.0
# The shortest: below it the sweep itself would cost more than the timeouts are worth.
MIN_TICK = 0.01


class Abortable(Protocol):
    @property
    def traffic(self) -> Traffic: ...

    def abort(self) -> None: ...


class Watched:
    """One connection under watch."""

    __slots__ = ("aborted", "conn", "idle", "last_seen", "since")

    def __init__(self, conn: Abortable, idle: float, now: float) -> None:
        self.conn = conn
        self.idle = idle
        self.last_seen = conn.traffic.total
        self.since = now
        self.aborted = False


class Deadline:
    """One deadline under watch: past it, ``on_expire`` runs once, in the sweeper."""

    __slots__ = ("deadline", "expired", "on_expire")

    def __init__(self, deadline: float, on_expire: Callable[[], object]) -> None:
        self.deadline = deadline
        self.on_expire = on_expire
        self.expired = False


class IdleSweeper:
    """Aborts idle connections and expires slow connects."""

    def __init__(self, tick: float = MAX_TICK) -> None:
        self.tick = tick
        self.watched: set[Watched] = set()
        self.deadlines: set[Deadline] = set()
        # Other per-tick chores of the worker (closing expired pooled connections).
        self.chores: list[Callable[[float], None]] = []
        # trio's clock, read by per-request deadlines: once ``serve`` runs, the clock's
        # own method, which skips the lookups of trio.current_time (a tenth of a µs
        # each, a few times per request).
        self.now: Callable[[], float] = trio.current_time

    def watch_deadline(self, timeout: float, on_expire: Callable[[], object]) -> Deadline:
        """Run ``on_expire`` once ``timeout`` seconds from now, unless unwatched first."""
        d = Deadline(trio.current_time() + timeout, on_expire)
        self.deadlines.add(d)
        return d

    def unwatch_deadline(self, d: Deadline) -> None:
        self.deadlines.discard(d)

    def watch_connect(self, sock: socket.socket, timeout: float) -> Deadline:
        """For a trio task waiting on ``sock``: past the deadline, its wait raises
        ClosedResourceError (trio.lowlevel.notify_closing)."""
        return self.watch_deadline(timeout, partial(trio.lowlevel.notify_closing, sock))

    def unwatch_connect(self, d: Deadline) -> None:
        self.deadlines.discard(d)

    def watch(self, conn: Abortable, idle: float) -> Watched:
        w = Watched(conn, idle, trio.current_time())
        self.watched.add(w)
        return w

    def unwatch(self, w: Watched) -> None:
        self.watched.discard(w)

    def sweep(self, now: float) -> int:
        """Abort the idle ones and expire late connects; returns how many."""
        aborted = 0
        for d in list(self.deadlines):
            if now >= d.deadline and not d.expired:
                d.expired = True
                self.deadlines.discard(d)
                try:
                    d.on_expire()
                except Exception:
                    # Its owner's bug loses its connection, not every timeout of the worker.
                    log.exception("deadline callback failed")
                aborted += 1
        # Copies: an abort runs its owner's callback, which unwatches at once.
        for w in list(self.watched):
            total = w.conn.traffic.total
            if total != w.last_seen:
                w.last_seen = total
                w.since = now
            elif now - w.since >= w.idle and not w.aborted:
                w.aborted = True
                w.conn.abort()
                aborted += 1
        return aborted

    async def serve(self) -> None:
        self.now = trio.lowlevel.current_clock().current_time
        while True:
            await trio.sleep(self.tick)
            now = trio.current_time()
            self.sweep(now)
            for chore in self.chores:
                chore(now)
