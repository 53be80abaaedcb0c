"""The control process of a generation: forked by the master next to the workers, it
runs the active health checks once for all of them, and the admin endpoint (trio
inside).

Owns the check loops: one per server of each backend with a ``health`` table, each
probing at its interval (with jitter), counting rise and fall, and on a change writing
the server's byte of the generation's shared mapping (control/shared.py, which every
worker reads once a tick) and logging it. The admin endpoint (obs/admin.py) reads the
same mapping and the checks' last results. SIGUSR2 (the generation is draining) ends
the admin endpoint: the next generation's control process serves it; SIGTERM ends
the process, once its generation's workers are gone.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import ssl
import time

import trio

from trilb.config.schema import Address, Backend, Config, Server
from trilb.control.checks import CheckState, jittered, probe
from trilb.control.resolve import keep_resolved
from trilb.control.shared import FIRST_LOOKUP_WAIT, UP, SharedState, dns_entries
from trilb.obs.admin import AdminServer
from trilb.obs.logging import setup_logging
from trilb.obs.stats import Check
from trilb.tls import client_context
from trilb.worker.main import die_with_parent

log = logging.getLogger(__name__)


def run_control(
    config: Config,
    shared: SharedState,
    ready_fd: int,
    master: int,
    admin: socket.socket | None = None,
    generation: int = 1,
) -> int:
    """The control process's life after fork; returns its exit status. ``admin``: the
    admin endpoint's listening socket, if the config has one."""
    setup_logging("control", config.global_.log_level)
    if not die_with_parent(master):
        return 0
    trio.run(_serve, config, shared, ready_fd, admin, generation)
    return 0


async def _serve(
    config: Config,
    shared: SharedState,
    ready_fd: int,
    admin: socket.socket | None,
    generation: int,
) -> None:
    checks: dict[tuple[str, int], Check] = {}
    lookups: list[trio.Event] = []  # the first lookups of dns: entries with no address
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGUSR2) as signals:
        async with trio.open_nursery() as nursery:
            for backend in config.backends.values():
                for slots in dns_entries(backend).values():
                    name = backend.servers[slots[0]].dns
                    first = trio.Event()
                    if shared.unresolved(backend.name, slots):
                        lookups.append(first)  # (none inherited from a reload)
                    nursery.start_soon(keep_resolved, config, backend, name, slots, shared,
                                       first)  # fmt: skip
                if backend.health is None:
                    continue
                tls = client_context(backend.tls) if backend.tls is not None else None
                for index, server in enumerate(backend.servers):
                    nursery.start_soon(_check_loop, backend, index, server, tls, shared,
                                       checks)  # fmt: skip
            endpoint = trio.CancelScope()
            if admin is not None:
                endpoint_server = AdminServer(config, shared, generation, checks)
                await nursery.start(_admin, endpoint_server, admin, endpoint)
            # Ready once the dns: entries with no address have had their first lookup (a
            # generation with some is ready only then), within a bound: a dead resolver
            # must not block a reload.
            with trio.move_on_after(FIRST_LOOKUP_WAIT):
                for first in lookups:
                    await first.wait()
            shared.resolved[0] = 1  # (workers at a first start wait for it to accept)
            _ready(ready_fd)
            async for sig in signals:
                if sig == signal.SIGTERM:
                    break
                endpoint.cancel()  # draining: the next generation's endpoint answers
            nursery.cancel_scope.cancel()


async def _admin(
    server: AdminServer,
    sock: socket.socket,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await server.serve(sock, task_status)


async def _check_loop(
    backend: Backend,
    index: int,
    server: Server,
    tls: ssl.SSLContext | None,
    shared: SharedState,
    checks: dict[tuple[str, int], Check],
) -> None:
    health = backend.health
    assert health is not None
    state = CheckState(health)
    # A control process forked again after a crash takes up where the last one was.
    state.up = shared.server_state(backend.name)[0][index] == UP
    rng = random.Random()
    await trio.sleep(rng.uniform(0, health.interval))  # spread the first checks
    address: Address | None = shared.address(backend.name, index)
    while True:
        if server.dns:  # a dns: slot: checked at its current address, if it has one
            now_at = shared.address(backend.name, index)
            if now_at != address:
                # Another server (the resolver marked it up): judged afresh from there.
                state = CheckState(health)
                state.up = shared.server_state(backend.name)[0][index] == UP
                address = now_at
            if address is None:
                checks.pop((backend.name, index), None)
                await trio.sleep(jittered(health.interval, rng))
                continue
        why = await probe(backend, server, tls, address)
        if server.dns and shared.address(backend.name, index) != address:
            continue  # the slot moved while the probe ran: its verdict was the old one's
        checks[(backend.name, index)] = Check(why is None, why or "passed", time.monotonic())
        if state.record(why is None):
            shared.set_health(backend.name, index, state.up)
            if state.up:
                log.warning("backend %s: server %s is up (%d %s check(s) passed)",
                            backend.name, server.name, health.rise, health.type)  # fmt: skip
            else:
                log.warning("backend %s: server %s is down (%d %s check(s) failed, the "
                            "last: %s)", backend.name, server.name, health.fall,
                            health.type, why)  # fmt: skip
        await trio.sleep(jittered(health.interval, rng))


def _ready(fd: int) -> None:
    try:
        os.write(fd, b"r")
        os.close(fd)
    except OSError:
        pass
