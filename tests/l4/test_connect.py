"""connect.open_tcp against real loopback listeners: success, refusal, timeout.

Every test runs twice: with the timeout enforced by a cancel scope (no sweeper) and by
an IdleSweeper's serve() task, as l4/tcp.py does.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from tests.l4.fds import open_fds
from trilb.config.schema import Address
from trilb.errors import UpstreamError
from trilb.l4.connect import open_tcp
from trilb.l4.idle import IdleSweeper

# The sweeper's tick: a swept connect timeout may fire up to one tick late.
TICK = 0.5


@pytest.fixture(params=["scope", "sweeper"])
def enforcer(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@asynccontextmanager
async def timeouts(enforcer: str) -> AsyncIterator[IdleSweeper | None]:
    """None (open_tcp uses a cancel scope) or a serving IdleSweeper."""
    if enforcer == "scope":
        yield None
        return
    sweeper = IdleSweeper(tick=TICK)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sweeper.serve)
        yield sweeper
        assert sweeper.deadlines == set()  # every connect unwatched itself
        nursery.cancel_scope.cancel()


def address_of(sock: socket.socket) -> Address:
    host, port = sock.getsockname()[:2]
    return Address(host, port)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


@pytest.fixture
def not_listening() -> Iterator[socket.socket]:
    """A port that is bound (so nobody else gets it) but refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


@pytest.fixture
def full_listener() -> Iterator[socket.socket]:
    """A listener whose accept queue is full, so the kernel drops further SYNs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(sock.getsockname())
        # Wait (real time, microseconds on loopback) until the filler is queued.
        _, writable, _ = select.select([], [filler], [], 2)
        assert writable and filler.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        try:
            yield sock
        finally:
            filler.close()


async def test_connects_to_a_listener(listener: socket.socket, enforcer: str) -> None:
    with trio.fail_after(2):
        async with timeouts(enforcer) as sweeper:
            sock = await open_tcp(address_of(listener), 1.0, sweeper)
    with sock:
        accepted, peer = listener.accept()
        with accepted:
            assert peer == sock.getsockname()
            assert sock.getpeername() == listener.getsockname()
            assert sock.gettimeout() == 0.0  # non-blocking
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            sock.send(b"hi")
            assert accepted.recv(2) == b"hi"


async def test_connects_over_ipv6_loopback(enforcer: str) -> None:
    # IPv6 is a supported address family: a machine without ::1 fails here on purpose.
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::1", 0))
    with listener:
        listener.listen(1)
        with trio.fail_after(2):
            async with timeouts(enforcer) as sweeper:
                sock = await open_tcp(address_of(listener), 1.0, sweeper)
        with sock:
            assert sock.family == socket.AF_INET6
            assert sock.getpeername()[:2] == listener.getsockname()[:2]


async def test_refused_is_a_retryable_upstream_error(
    not_listening: socket.socket, enforcer: str
) -> None:
    address = address_of(not_listening)
    before = open_fds()
    with trio.fail_after(2):
        async with timeouts(enforcer) as sweeper:
            with pytest.raises(UpstreamError) as caught:
                await open_tcp(address, 1.0, sweeper)
    assert caught.value.kind == "refused"
    assert caught.value.retryable is True
    assert str(address) in str(caught.value)
    assert open_fds() - before == set()  # the failed socket is closed


async def test_timeout_is_a_retryable_upstream_error(
    full_listener: socket.socket, enforcer: str, autojump_clock: trio.testing.MockClock
) -> None:
    address = address_of(full_listener)
    before = open_fds()
    with trio.fail_after(60):
        async with timeouts(enforcer) as sweeper:
            started, real_start = trio.current_time(), time.monotonic()
            with pytest.raises(UpstreamError) as caught:
                await open_tcp(address, 5.0, sweeper)
            waited = trio.current_time() - started
    assert caught.value.kind == "timeout"
    assert caught.value.retryable is True
    assert str(address) in str(caught.value)
    assert 5.0 <= waited <= 5.0 + (TICK if sweeper else 0.01)
    assert time.monotonic() - real_start < 2  # the clock jumped; no real wait
    assert open_fds() - before == set()
