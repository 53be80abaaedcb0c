"""Keep-alive connections to backend servers: one pool per server, per worker.

Owns reuse (LIFO: the most recently used connection is the least likely to have been
closed by the server), the idle limits (``pool_max_idle``, ``pool_idle_timeout``,
swept once per sweeper tick) and the per-server cap (``pool_max_per_server``: a
server at its cap counts as unavailable for that attempt, as a full server in HAProxy
without a queue). A pooled connection is checked before reuse (Stream.alive: free
when the reactor saw no event on it since the last check, else one poll); one that
the server closes after that check fails its request before any response byte, which
the proxy may retry. It does not choose servers or speak HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from trilb.balance.algorithms import ServerSlot
from trilb.config.schema import Backend
from trilb.errors import UpstreamError
from trilb.l4.connect import open_tcp, start_tls
from trilb.l4.idle import IdleSweeper
from trilb.l7.http1 import ResponseParser
from trilb.l7.stream import Stream
from trilb.obs.counters import S_BYTES_IN, S_BYTES_OUT
from trilb.tls import client_context, sni_name


class ServerPool:
    """The connections of one worker to one server."""

    __slots__ = ("busy", "idle", "slot")

    def __init__(self, slot: ServerSlot) -> None:
        self.slot = slot
        self.idle: list[tuple[Stream, float]] = []  # (connection, idle since)
        self.busy = 0


class UpstreamPool:
    """All server pools of one backend."""

    def __init__(self, config: Backend, slots: list[ServerSlot], sweeper: IdleSweeper) -> None:
        self.config = config
        self.sweeper = sweeper
        self.servers = [ServerPool(slot) for slot in slots]
        # TLS to the servers: one context, and the SNI name of each server.
        self.tls = client_context(config.tls) if config.tls is not None else None
        self.sni = [sni_name(config.tls, s.spec) if config.tls else None for s in config.servers]
        # Told each final status of each server (the backend's eject_on_5xx), if set.
        self.observe: Callable[[ServerSlot, int], None] | None = None

    def full(self, slot: ServerSlot) -> bool:
        """No connection can be had: none idle, and a new one would pass the cap."""
        cap = self.config.pool_max_per_server
        pool = self.servers[slot.index]
        return cap > 0 and not pool.idle and pool.busy >= cap

    def take(self, slot: ServerSlot) -> Stream | None:
        """An idle pooled connection to ``slot``'s server that is still usable, or None."""
        pool = self.servers[slot.index]
        idle = pool.idle
        while idle:
            stream = idle.pop()[0]
            # One poll: the server may have closed it, or (a broken server) sent bytes
            # nobody asked for, which must never become the next client's response.
            if stream.alive():
                pool.busy += 1
                slot.active += 1  # (in flight to it: leastconn's measure, the stats')
                return stream
            stream.close()
        return None

    async def open(self, slot: ServerSlot) -> Stream:
        """A new connection to ``slot``'s server.

        Raises:
          UpstreamError: the connect failed (retryable: nothing was sent).
        """
        address = slot.address
        if address is None:  # (a dns: slot emptied since it was picked)
            raise UpstreamError("unavailable", f"server {slot.name} has no address now", True)
        timeout = self.config.connect_timeout
        sock = await open_tcp(address, timeout, self.sweeper)
        if self.tls is not None:
            sock = await start_tls(sock, self.tls, self.sni[slot.index], slot.name, timeout,
                                   self.sweeper)  # fmt: skip
        self.servers[slot.index].busy += 1
        slot.active += 1
        stream = Stream(sock, self.sweeper, upstream=True, name=slot.name)
        stream.count_into(slot.counts, S_BYTES_IN, S_BYTES_OUT)
        stream.peer = address
        observe = None if self.observe is None else partial(self.observe, slot)
        stream.parser = ResponseParser(counts=slot.counts, observe=observe)
        return stream

    def release(self, slot: ServerSlot, stream: Stream, reusable: bool) -> None:
        """Give a connection back: pooled if it may carry another request, else closed."""
        pool = self.servers[slot.index]
        pool.busy -= 1
        slot.active -= 1
        stream.disarm()
        stream.timer.on_expire = stream.wake
        if (
            reusable
            and len(pool.idle) < self.config.pool_max_idle
            and not stream.closed
            and stream.peer is slot.address  # (a dns: slot that moved: not to the old one)
        ):
            pool.idle.append((stream, self.sweeper.now()))
        else:
            stream.close()

    def expire(self, now: float) -> None:
        """Close connections idle for longer than ``pool_idle_timeout``."""
        limit = self.config.pool_idle_timeout
        for pool in self.servers:
            if pool.idle and now - pool.idle[0][1] >= limit:
                keep = []
                for stream, since in pool.idle:
                    if now - since >= limit:
                        stream.close()
                    else:
                        keep.append((stream, since))
                pool.idle = keep

    def moved(self, slot: ServerSlot) -> None:
        """``slot`` has a new address (dns:): its idle connections go to the old one."""
        pool = self.servers[slot.index]
        for stream, _ in pool.idle:
            stream.close()
        pool.idle.clear()

    def close(self) -> None:
        for pool in self.servers:
            for stream, _ in pool.idle:
                stream.close()
            pool.idle.clear()
