"""HttpFrontend's accepting in the reactor: out of descriptors, it pauses and resumes."""

from __future__ import annotations

import errno
import socket
import tomllib

from trilb.config.load import parse_config
from trilb.l4.accept import ACCEPT_PAUSE
from trilb.l4.idle import IdleSweeper
from trilb.l4.pump import Pools
from trilb.l4.reactor import Reactor
from trilb.l7.server import HttpFrontend

CONFIG = """
[frontends.web]
mode = "http"
bind = "127.0.0.1:1"
default_backend = "app"
[backends.app]
servers = ["127.0.0.1:2"]
"""


class FailingListener:
    """A listener whose accept() first runs out of descriptors, then finds nothing."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.family = real.family
        self.type = real.type
        self.calls = 0

    def fileno(self) -> int:
        return self.real.fileno()

    def setsockopt(self, *args: int) -> None:
        self.real.setsockopt(*args)

    def _accept(self) -> tuple[int, tuple[str, int]]:
        self.calls += 1
        if self.calls == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        raise BlockingIOError


async def test_out_of_descriptors_pauses_accepting_then_resumes() -> None:
    config = parse_config(tomllib.loads(CONFIG))
    sweeper = IdleSweeper()
    reactor = Reactor(Pools())
    fe = HttpFrontend(config.frontends["web"], {}, sweeper, reactor)
    with socket.socket() as real:
        real.bind(("127.0.0.1", 0))
        real.listen()
        listener = FailingListener(real)
        fe.listen(listener)  # type: ignore[arg-type]
        fd = real.fileno()
        reactor.callbacks[fd](0)  # readiness: accept() fails with EMFILE
        assert fd not in reactor.callbacks  # not watched: no hot loop on the error
        sweeper.sweep(sweeper.now() + ACCEPT_PAUSE / 2)
        assert fd not in reactor.callbacks
        sweeper.sweep(sweeper.now() + ACCEPT_PAUSE * 2)
        assert fd in reactor.callbacks  # watched again after the pause
        reactor.callbacks[fd](0)
        assert listener.calls == 2 and fd in reactor.callbacks  # empty queue: still watched
        fe.stop_listening()
        assert fd not in reactor.callbacks
    reactor.ep.close()
