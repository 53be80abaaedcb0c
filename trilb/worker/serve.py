"""What a worker serves: its slot's listeners, until SIGTERM, then the drain.

Owns the worker's task tree: an accept nursery (one task per listening socket) inside
a handler nursery (one task per connection), so that draining is "cancel accepting,
give the handlers ``grace`` seconds, then cancel them". Also the ready byte the master
waits for before retiring an older generation. It does not move bytes (l4/) or decide
when to stop (the master sends SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import socket

import trio

from trilb.balance.backend import BackendState
from trilb.config.schema import Config
from trilb.control.shared import FIRST_LOOKUP_WAIT, SharedState
from trilb.l4.accept import Acceptor
from trilb.l4.idle import MAX_TICK, MIN_TICK, IdleSweeper
from trilb.l4.pump import Pools
from trilb.l4.reactor import Reactor
from trilb.l4.tcp import TcpFrontend
from trilb.l4.udp import UdpFrontend
from trilb.l7.proxy import HttpBackend
from trilb.l7.server import HttpFrontend
from trilb.l7.wsrelay import CLOSE_TIMEOUT
from trilb.obs.accesslog import AccessLog
from trilb.tls import ServerTls, server_tls
from trilb.worker.publish import Publisher

log = logging.getLogger(__name__)

Frontend = TcpFrontend | HttpFrontend | UdpFrontend


async def serve_worker(
    config: Config,
    listeners: dict[str, list[socket.socket]],
    ready_fd: int,
    tls: dict[str, ServerTls] | None = None,
    shared: SharedState | None = None,
    slot: int = 0,
) -> None:
    """Serve until SIGTERM, then drain within ``global.grace`` and return.

    ``tls``: the TLS frontends' contexts, as the master built them before forking (so
    that workers share session-ticket keys); None: built here.
    """
    pools = Pools()
    sweeper = IdleSweeper(tick=_tick(config))
    reactor = Reactor(pools)
    frontends = _frontends(config, reactor, sweeper, server_tls(config) if tls is None else tls)
    if shared is not None:  # the control process's view in, this worker's counters out
        publish = Publisher(shared, slot, _backend_states(frontends), frontends)
        if shared.awaiting_dns(config):
            # A first start: a dns: entry has no server until its first answer; clients
            # wait in the listen queue for it rather than get 503s (a reload inherits the
            # addresses known, so it does not wait).
            # (Longer than the control process's own bound: it starts after the workers,
            # and says it is over, answered or not, when its bound passes.)
            with trio.move_on_after(FIRST_LOOKUP_WAIT + 2):
                while shared.awaiting_dns(config):
                    await trio.sleep(0.02)
        publish()  # (before the first request too)
        sweeper.chores.append(publish)
    access = None
    if config.access_log is not None:
        access = AccessLog(config.access_log)
        for fe in frontends:
            fe.set_access_log(access)
        sweeper.chores.append(access.flush)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGUSR1) as signals:
        async with trio.open_nursery() as handlers:
            handlers.start_soon(sweeper.serve)
            handlers.start_soon(reactor.serve)
            async with trio.open_nursery() as accepting:
                for fe in frontends:
                    if isinstance(fe, HttpFrontend):
                        fe.handlers = handlers
                        for backend in fe.proxy.backends.values():
                            if backend.h2 is not None:  # its connections' readers run here
                                backend.h2.nursery = handlers
                    for sock in listeners[fe.config.name]:
                        if isinstance(fe, HttpFrontend | UdpFrontend):
                            fe.listen(sock)  # served in the reactor's callbacks
                        else:
                            accepting.start_soon(fe.serve, sock)
                _notify_ready(ready_fd)
                async for sig in signals:
                    if sig == signal.SIGTERM:
                        break
                    if access is not None:
                        access.reopen()
                accepting.cancel_scope.cancel()
                for fe in frontends:
                    if isinstance(fe, HttpFrontend | UdpFrontend):
                        fe.stop_listening()
            for fe in frontends:
                if isinstance(fe, UdpFrontend):
                    continue  # (its listeners still send the replies of its flows)
                for sock in listeners[fe.config.name]:
                    _take_queued(fe, sock)
                    sock.close()  # our copy only: the master keeps the socket and its queue
            for fe in frontends:
                if isinstance(fe, HttpFrontend | UdpFrontend):
                    fe.drain()  # idle keep-alive connections close now, busy ones after
            active = sum(fe.active for fe in frontends)
            log.info("stopped accepting; draining %d connection(s)", active)
            await _drain(frontends, config.global_.grace)
            for fe in frontends:
                if isinstance(fe, HttpFrontend | UdpFrontend):
                    fe.close_all()
            handlers.cancel_scope.cancel()
    pools.close()
    if access is not None:
        access.close()


def _take_queued(fe: Acceptor, sock: socket.socket) -> None:
    """Accept what is already queued before closing our copy of a listener.

    When a reload removes this slot (fewer workers) or this listener, our copy is the
    last one: closing it makes Linux reset every connection still in its queue. Served
    here, within the grace period, they are not lost.
    """
    while True:
        try:
            conn, peer = sock.accept()
        except OSError:  # BlockingIOError: the queue is empty; anything else: give up
            return
        fe.admit(conn, peer)


def _tick(config: Config) -> float:
    """A quarter of the shortest timeout: each fires at most 25% late."""
    timeouts = [b.connect_timeout for b in config.backends.values()]
    for fe in config.frontends.values():
        if fe.mode == "http":
            timeouts += [fe.header_timeout, fe.body_timeout, fe.keepalive_timeout]
        else:
            timeouts.append(fe.idle_timeout)
    timeouts += [b.response_timeout for b in config.backends.values()]
    return max(MIN_TICK, min([MAX_TICK, *(t / 4 for t in timeouts)]))


def _frontends(
    config: Config, reactor: Reactor, sweeper: IdleSweeper, tls: dict[str, ServerTls]
) -> list[Frontend]:
    """This worker's frontends; each backend gets the runtime its frontends' mode needs."""
    tcp_backends: dict[str, BackendState] = {}
    http_backends: dict[str, HttpBackend] = {}
    out: list[Frontend] = []
    # One instance per [plugins.NAME] per worker, shared by every frontend that lists it.
    plugins = {name: spec.cls(spec.settings) for name, spec in config.plugins.items()}
    for fe in config.frontends.values():
        if fe.mode == "http":
            for name in fe.backend_names:
                if name not in http_backends:
                    http_backends[name] = HttpBackend(config.backends[name], sweeper)
            out.append(HttpFrontend(fe, http_backends, sweeper, reactor, tls.get(fe.name),
                                    plugins))  # fmt: skip
        else:  # (L4 frontends of one backend share its state: DNS over TCP and UDP)
            name = fe.default_backend
            if name not in tcp_backends:
                tcp_backends[name] = BackendState(config.backends[name])
                sweeper.chores.append(tcp_backends[name].restore)  # (ejections that are over)
            if fe.mode == "udp":
                out.append(UdpFrontend(fe, tcp_backends[name], reactor, sweeper))
            else:
                out.append(TcpFrontend(fe, tcp_backends[name], reactor, sweeper, plugins))
    return out


def _backend_states(frontends: list[Frontend]) -> list[BackendState]:
    """Each backend's state in this worker, once."""
    states: dict[int, BackendState] = {}
    for fe in frontends:
        if isinstance(fe, HttpFrontend):
            for backend in fe.proxy.backends.values():
                states[id(backend.state)] = backend.state
        else:
            states[id(fe.backend)] = fe.backend
    return list(states.values())


async def _drain(frontends: list[Frontend], grace: float) -> None:
    # WebSockets live on until the grace deadline, less the time their Close handshake
    # may take: then 1001 to both sides (a reload's old generation ends on time).
    websockets_at = trio.current_time() + max(grace - CLOSE_TIMEOUT - 0.5, 0.0)
    websockets_open = True
    with trio.move_on_after(grace) as scope:
        while any(fe.active for fe in frontends):
            if websockets_open and trio.current_time() >= websockets_at:
                websockets_open = False
                for fe in frontends:
                    if isinstance(fe, HttpFrontend):
                        fe.close_websockets()
            await trio.sleep(0.05)
    if scope.cancelled_caught:
        left = sum(fe.active for fe in frontends)
        log.warning("grace period over: closing %d connection(s)", left)


def _notify_ready(fd: int) -> None:
    try:
        os.write(fd, b"r")
        os.close(fd)
    except OSError:
        pass  # the master is gone; PR_SET_PDEATHSIG will stop us
