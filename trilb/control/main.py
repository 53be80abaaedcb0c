"""The control process of a generation: forked by the master next to the workers, it
runs the active health checks once for all of them (trio inside).

Owns the check loops: one per server of each backend with a ``health`` table, each
probing at its interval (with jitter), counting rise and fall, and on a change writing
the server's byte of the generation's shared mapping (control/shared.py, which every
worker reads once a tick) and logging it. It stops on SIGTERM, with its generation.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import ssl

import trio

from trilb.config.schema import Backend, Config, Server
from trilb.control.checks import CheckState, jittered, probe
from trilb.control.shared import UP, SharedHealth
from trilb.obs.logging import setup_logging
from trilb.tls import client_context
from trilb.worker.main import die_with_parent

log = logging.getLogger(__name__)


def run_control(config: Config, shared: SharedHealth, ready_fd: int, master: int) -> int:
    """The control process's life after fork; returns its exit status."""
    setup_logging("control", config.global_.log_level)
    if not die_with_parent(master):
        return 0
    trio.run(_serve, config, shared, ready_fd)
    return 0


async def _serve(config: Config, shared: SharedHealth, ready_fd: int) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for backend in config.backends.values():
                if backend.health is None:
                    continue
                tls = client_context(backend.tls) if backend.tls is not None else None
                for index, server in enumerate(backend.servers):
                    nursery.start_soon(_check_loop, backend, index, server, tls, shared)
            _ready(ready_fd)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


async def _check_loop(
    backend: Backend,
    index: int,
    server: Server,
    tls: ssl.SSLContext | None,
    shared: SharedHealth,
) -> None:
    health = backend.health
    assert health is not None
    state = CheckState(health)
    # A control process forked again after a crash takes up where the last one was.
    state.up = shared.states(backend.name, len(backend.servers))[index] == UP
    rng = random.Random()
    await trio.sleep(rng.uniform(0, health.interval))  # spread the first checks
    while True:
        why = await probe(backend, server, tls)
        if state.record(why is None):
            shared.set(backend.name, index, state.up)
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
