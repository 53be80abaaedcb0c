"""A ``mode = "udp"`` frontend: a flow table from client addresses to connected
upstream sockets, datagrams relayed both ways.

Owns the flows of one frontend in one worker. A datagram from a client address with no
flow makes one: the per-source limits are asked, the balancer picks a server (``source``
hashing keeps a client on one server across flows), and a UDP socket connected to that
server carries the client's datagrams, each sent as it came (boundaries kept); what the
server sends back on it goes to the client from the frontend's own socket and address.
A flow with no datagram either way for ``idle_timeout`` ends; at ``max_flows`` the
least recently active flow is evicted (counted, logged once per interval). With
SO_REUSEPORT the kernel hashes a client's address and port to one worker's socket, so a
flow lives in one worker.

A server that answers with an ICMP error (the connected socket reports it: port
unreachable, host unreachable) is ejected from the balancing for UNREACHABLE_PAUSE
seconds in this worker (balance/backend.py, as the passive checks of TCP are). Like the
rest of l4/, no task per flow: the reactor's readiness callbacks and the idle sweeper.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import OrderedDict
from functools import partial

import trio

from trilb.balance.algorithms import ServerSlot
from trilb.balance.backend import BackendState, source_key
from trilb.config.schema import Frontend
from trilb.l4.accept import LOG_INTERVAL
from trilb.l4.idle import IdleSweeper, Watched
from trilb.l4.limits import SourceLimits
from trilb.l4.pump import Traffic
from trilb.l4.reactor import Reactor
from trilb.obs.accesslog import AccessLog, tcp_line
from trilb.obs.counters import (
    F_BYTES_IN,
    F_BYTES_OUT,
    F_CONNECTIONS,
    F_REFUSED,
    S_BYTES_IN,
    S_BYTES_OUT,
    S_TOTAL,
    frontend_counts,
)
from trilb.obs.logging import Throttle

log = logging.getLogger(__name__)

# The largest UDP payload (IPv4: 65,535 - 8 - 20); a read never truncates a datagram.
MAX_DATAGRAM = 65507
# Datagrams taken from one socket per readiness event before the others get a turn.
BURST = 64
# How long a server that answered with an ICMP error is left out of the balancing.
UNREACHABLE_PAUSE = 5.0
# Errors a connected UDP socket reports for an ICMP message about an earlier datagram.
_UNREACHABLE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)

Client = tuple[str, int] | tuple[str, int, int, int]  # (an IPv6 address has four parts)


class Flow:
    """One client address's datagrams to one server, and the server's back."""

    __slots__ = ("client", "listener", "slot", "sock", "started", "traffic", "udp", "watched")

    def __init__(
        self,
        udp: UdpFrontend,
        client: Client,
        listener: socket.socket,
        sock: socket.socket,
        slot: ServerSlot,
    ) -> None:
        self.udp = udp
        self.client = client
        self.listener = listener  # where the client's datagrams came: replies leave there
        self.sock = sock
        self.slot = slot
        self.traffic = Traffic()  # the idle sweeper watches its total
        self.watched: Watched | None = None
        self.started = trio.current_time()  # (its access log line's duration)

    def abort(self) -> None:
        """Idle for idle_timeout (the sweeper's call)."""
        self.udp.end(self, "idle")


class UdpFrontend:
    """One UDP frontend inside one worker."""

    def __init__(
        self, config: Frontend, backend: BackendState, reactor: Reactor, sweeper: IdleSweeper
    ) -> None:
        self.config = config
        self.backend = backend
        self.reactor = reactor
        self.sweeper = sweeper
        self.limits = SourceLimits(config.limits) if config.limits is not None else None
        # Least recently active first: the eviction at max_flows takes the first.
        self.flows: OrderedDict[Client, Flow] = OrderedDict()
        self.listeners: list[socket.socket] = []
        self.idle = config.idle_timeout
        # Flows made and refused (limits, no server) are counted in ``counts`` (published
        # once a tick); flows evicted at max_flows and datagrams dropped (a full socket
        # buffer, an error) here.
        self.counts = frontend_counts()
        self.evicted = 0
        self.dropped = 0
        self.access: AccessLog | None = None
        self._evictions = Throttle(LOG_INTERVAL)
        self._refusals = Throttle(LOG_INTERVAL)

    def set_access_log(self, access: AccessLog) -> None:
        """A line per flow, when it ends."""
        self.access = access

    @property
    def active(self) -> int:
        """Flows open (the drain waits for them to go idle)."""
        return len(self.flows)

    def listen(self, sock: socket.socket) -> None:
        """Read ``sock``'s datagrams in the reactor's callbacks until stop_listening."""
        self.listeners.append(sock)
        self.reactor.watch(sock.fileno(), partial(self._on_client, sock), edge=False)

    def stop_listening(self) -> None:
        for sock in self.listeners:
            self.reactor.unwatch(sock.fileno())

    def drain(self) -> None:
        """Stopped: flows live on for the replies still coming, ending after a second
        without any (rather than idle_timeout)."""
        self.idle = min(self.idle, 1.0)
        for flow in self.flows.values():
            if flow.watched is not None:
                flow.watched.idle = self.idle

    def close_all(self) -> None:
        for flow in list(self.flows.values()):
            self.end(flow, "stopped")

    # --- client -> server ------------------------------------------------------------

    def _on_client(self, listener: socket.socket, events: int) -> None:
        flows = self.flows
        for _ in range(BURST):
            try:
                data, client = listener.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # An ICMP error about a reply we sent to a client that is gone: nothing
                # to do for it (its flow ends idle).
                continue
            flow = flows.get(client)
            if flow is None:
                flow = self._open(client, listener)
                if flow is None:
                    continue
            else:
                flows.move_to_end(client)
            traffic = flow.traffic
            n = len(data)
            traffic.up += n
            traffic.total += n
            self.counts[F_BYTES_IN] += n
            flow.slot.counts[S_BYTES_OUT] += n
            try:
                flow.sock.send(data)
            except (BlockingIOError, InterruptedError):
                self.dropped += 1  # (the socket buffer is full: UDP drops, so do we)
            except OSError as exc:
                self.dropped += 1
                self._failed(flow, exc)

    def _open(self, client: Client, listener: socket.socket) -> Flow | None:
        """A new flow for ``client``, or None when it is refused."""
        ip = client[0]
        limits = self.limits
        if limits is not None:
            why = limits.admit(ip, trio.current_time())
            if why is not None:
                self._refuse(ip, why)
                return None
        if len(self.flows) >= self.config.max_flows:
            self._evict()
        backend = self.backend
        key = source_key(ip) if backend.hashes_source else None
        for slot in backend.attempts(key):
            server = slot.address
            if server is None:  # (a dns: slot emptied since the pick)
                continue
            try:
                sock = socket.socket(server.family, socket.SOCK_DGRAM)
            except OSError as exc:  # out of descriptors: another server would not do better
                self._release_source(ip)
                self._refuse(ip, f"no socket for a flow ({exc.strerror})")
                return None
            try:
                sock.setblocking(False)
                sock.connect(server.sockaddr)
            except OSError:
                sock.close()
                continue
            flow = Flow(self, client, listener, sock, slot)
            slot.active += 1
            slot.counts[S_TOTAL] += 1
            self.counts[F_CONNECTIONS] += 1
            self.flows[client] = flow
            self.reactor.watch(sock.fileno(), partial(self._on_server, flow), edge=False)
            flow.watched = self.sweeper.watch(flow, self.idle)
            return flow
        self._release_source(ip)
        self._refuse(ip, "no server available")
        return None

    # --- server -> client ------------------------------------------------------------

    def _on_server(self, flow: Flow, events: int) -> None:
        sock, listener, client, traffic = flow.sock, flow.listener, flow.client, flow.traffic
        for _ in range(BURST):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._failed(flow, exc)
                return
            n = len(data)
            traffic.total += n
            flow.slot.counts[S_BYTES_IN] += n
            self.counts[F_BYTES_OUT] += n
            try:
                listener.sendto(data, client)
            except OSError:
                self.dropped += 1  # (a full buffer, or a client address gone)

    # --- ends ------------------------------------------------------------------------

    def end(self, flow: Flow, why: str) -> None:
        """Close a flow (idle, evicted, failed or the worker's end: ``why``)."""
        if self.flows.get(flow.client) is not flow:
            return
        del self.flows[flow.client]
        if self.access is not None:
            t = flow.traffic
            self.access.add(tcp_line(
                self.config.name, f"{flow.client[0]}:{flow.client[1]}",
                self.backend.config.name, flow.slot.name, t.up, t.total - t.up,
                trio.current_time() - flow.started, why, time.time(), self.access.json, "udp",
            ))  # fmt: skip
        flow.slot.active -= 1
        if flow.watched is not None:
            self.sweeper.unwatch(flow.watched)
            flow.watched = None
        self.reactor.unwatch(flow.sock.fileno(), closing=True)
        flow.sock.close()
        self._release_source(flow.client[0])

    def _evict(self) -> None:
        _, oldest = next(iter(self.flows.items()))
        self.end(oldest, "evicted")
        self.evicted += 1
        more = self._evictions.allow(trio.current_time())
        if more is not None:
            log.warning("frontend %s: max_flows %d reached: the least recently active flow "
                        "was closed (%d more since last report)", self.config.name,
                        self.config.max_flows, more)  # fmt: skip

    def _failed(self, flow: Flow, exc: OSError) -> None:
        """The flow's socket reported an error: an ICMP message from the server's side
        pauses that server; either way the flow ends (the client's next datagram makes
        a new one, to another server if this one is paused)."""
        if exc.errno in _UNREACHABLE:
            why = f"frontend {self.config.name}: {exc.strerror}"
            self.backend.eject(flow.slot, trio.current_time(), UNREACHABLE_PAUSE, why)
        self.end(flow, errno.errorcode.get(exc.errno or 0, "error"))

    def _release_source(self, ip: str) -> None:
        if self.limits is not None:
            self.limits.release(ip)

    def _refuse(self, ip: str, why: str) -> None:
        self.counts[F_REFUSED] += 1
        more = self._refusals.allow(trio.current_time())
        if more is not None:
            log.warning("frontend %s: datagram from %s dropped: %s%s", self.config.name, ip,
                        why, f" (+{more} more since last report)" if more else "")  # fmt: skip
