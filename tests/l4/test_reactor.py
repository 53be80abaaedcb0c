"""Relaying over real loopback TCP sockets: pump.Direction driven by reactor.Reactor.

pump.py moves the bytes of one direction; reactor.py's Link ties two directions into a
relayed connection and its Reactor drives them from one epoll. These tests go through
Reactor.add(), the one way the rest of trilb relays, with splice allowed and forbidden.

Topology of every test: client peer <-> proxy_client [Link] proxy_server <-> server peer.
The peers are trio streams driven by the test. The owner callback (on_done) records the
sockets' SO_LINGER and closes them, as l4/tcp.py does.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from tests.conftest import TcpPair
from tests.l4.fds import open_fds
from trilb.l4.pump import Pools
from trilb.l4.reactor import Link, Reactor

LINGER_RESET = struct.pack("ii", 1, 0)
LINGER_OFF = struct.pack("ii", 0, 0)
# Bigger than the pump's BUDGET, a pipe and a buffer; odd sizes so that no chunk
# boundary lines up and the two directions are told apart in the counters.
UP_BYTES = 3 * 1024 * 1024 + 123
DOWN_BYTES = 2 * 1024 * 1024 + 77


@pytest.fixture(params=[True, False], ids=["splice", "copy"])
def use_splice(request: pytest.FixtureRequest) -> bool:
    param: bool = request.param
    return param


def stream(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


def linger(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, len(LINGER_OFF))


@dataclass
class Relayed:
    """Two peers joined through a Link, and what its owner saw when it ended."""

    client: trio.SocketStream
    server: trio.SocketStream
    proxy_client: socket.socket
    proxy_server: socket.socket
    close_on_done: bool
    link: Link | None = None
    done: trio.Event = field(default_factory=trio.Event)
    done_calls: int = 0
    lingers: tuple[bytes, bytes] | None = None

    def on_done(self, link: Link) -> None:
        self.done_calls += 1
        self.lingers = (linger(self.proxy_client), linger(self.proxy_server))
        if self.close_on_done:
            self.proxy_client.close()
            self.proxy_server.close()
        self.done.set()

    @property
    def traffic(self) -> tuple[int, int, int]:
        assert self.link is not None
        t = self.link.traffic
        return t.up, t.down, t.total

    def close_peers(self) -> None:
        self.client.socket.close()
        self.server.socket.close()


def relay(
    reactor: Reactor, tcp_pair: TcpPair, use_splice: bool, close_on_done: bool = True
) -> Relayed:
    client, proxy_client = tcp_pair()
    proxy_server, server = tcp_pair()
    relayed = Relayed(stream(client), stream(server), proxy_client, proxy_server, close_on_done)
    relayed.link = reactor.add(proxy_client, proxy_server, use_splice, relayed.on_done)
    return relayed


@asynccontextmanager
async def running(pools: Pools) -> AsyncIterator[Reactor]:
    reactor = Reactor(pools)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reactor.serve)
        yield reactor
        nursery.cancel_scope.cancel()


async def receive_until_eof(peer: trio.SocketStream) -> bytes:
    data = bytearray()
    while chunk := await peer.receive_some():
        data += chunk
    return bytes(data)


async def receive_exactly(peer: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await peer.receive_some(size - len(data))
        assert chunk, f"eof after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def reset(peer: trio.SocketStream) -> None:
    peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    peer.socket.close()


async def end_cleanly(r: Relayed) -> None:
    await r.client.send_eof()
    await r.server.send_eof()
    assert await receive_until_eof(r.server) == b""
    assert await receive_until_eof(r.client) == b""
    await r.done.wait()


async def test_small_messages_cross_both_ways(tcp_pair: TcpPair, use_splice: bool) -> None:
    with trio.fail_after(5):
        async with running(Pools()) as reactor:
            r = relay(reactor, tcp_pair, use_splice)
            for size in (1, 100, 1500, 70_000):
                up = bytes([size % 251]) * size
                await r.client.send_all(up)
                assert await receive_exactly(r.server, size) == up
                down = bytes([(size + 1) % 251]) * (size + 3)
                await r.server.send_all(down)
                assert await receive_exactly(r.client, size + 3) == down
            await end_cleanly(r)
    assert r.link is not None and r.link.traffic.error is None
    assert r.done_calls == 1


async def test_mebibytes_both_directions_at_once_arrive_intact(
    tcp_pair: TcpPair, use_splice: bool
) -> None:
    rng = random.Random(7)
    up, down = rng.randbytes(UP_BYTES), rng.randbytes(DOWN_BYTES)
    got: dict[str, bytes] = {}

    async def send_then_eof(peer: trio.SocketStream, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(data), 200_000):
            await peer.send_all(view[start : start + 200_000])
        await peer.send_eof()

    async def collect(peer: trio.SocketStream, name: str) -> None:
        got[name] = await receive_until_eof(peer)

    with trio.fail_after(10):
        async with running(Pools()) as reactor:
            r = relay(reactor, tcp_pair, use_splice)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_then_eof, r.client, up)
                nursery.start_soon(send_then_eof, r.server, down)
                nursery.start_soon(collect, r.server, "at_server")
                nursery.start_soon(collect, r.client, "at_client")
            await r.done.wait()
    assert len(got["at_server"]) == UP_BYTES
    assert hashlib.sha256(got["at_server"]).digest() == hashlib.sha256(up).digest()
    assert len(got["at_client"]) == DOWN_BYTES
    assert hashlib.sha256(got["at_client"]).digest() == hashlib.sha256(down).digest()
    assert r.link is not None and r.link.traffic.error is None
    assert r.traffic == (UP_BYTES, DOWN_BYTES, UP_BYTES + DOWN_BYTES)


async def test_traffic_counts_each_direction(tcp_pair: TcpPair, use_splice: bool) -> None:
    with trio.fail_after(5):
        async with running(Pools()) as reactor:
            r = relay(reactor, tcp_pair, use_splice)
            await r.client.send_all(b"u" * 1000)
            await receive_exactly(r.server, 1000)
            assert r.traffic == (1000, 0, 1000)
            await r.server.send_all(b"d" * 2500)
            await receive_exactly(r.client, 2500)
            assert r.traffic == (1000, 2500, 3500)
            await end_cleanly(r)
    assert r.traffic == (1000, 2500, 3500)


async def test_half_close_keeps_the_other_direction_open(
    tcp_pair: TcpPair, use_splice: bool
) -> None:
    with trio.fail_after(5):
        async with running(Pools()) as reactor:
            r = relay(reactor, tcp_pair, use_splice)
            await r.client.send_all(b"request")
            await r.client.send_eof()
            # The server sees all the data, then the client's FIN.
            assert await receive_until_eof(r.server) == b"request"
            await r.server.send_all(b"first part ")
            assert await receive_exactly(r.client, 11) == b"first part "
            await trio.testing.wait_all_tasks_blocked()
            assert not r.done.is_set(), "the link ended while the server could still send"
            await r.server.send_all(b"second part")
            await r.server.send_eof()
            assert await receive_until_eof(r.client) == b"second part"
            await r.done.wait()
    assert r.link is not None and r.link.traffic.error is None
    assert r.traffic == (7, 22, 29)
    # A clean end: no reset armed, so the owner's close sends FIN, not RST.
    assert r.lingers == (LINGER_OFF, LINGER_OFF)
    assert r.done_calls == 1


@pytest.mark.parametrize("side", ["client", "server"])
async def test_reset_by_one_side_ends_the_link_and_resets_the_other(
    tcp_pair: TcpPair, use_splice: bool, side: str
) -> None:
    async with running(Pools()) as reactor:
        r = relay(reactor, tcp_pair, use_splice)
        resetting, other = r.client, r.server
        if side == "server":
            resetting, other = other, resetting
        with trio.fail_after(2):
            await resetting.send_all(b"before the reset")
            assert await receive_exactly(other, 16) == b"before the reset"
            await trio.testing.wait_all_tasks_blocked()
            reset(resetting)
            await r.done.wait()
        assert r.link is not None
        error = r.link.traffic.error
        assert isinstance(error, OSError)
        assert error.errno in (errno.ECONNRESET, errno.EPIPE)
        assert r.lingers == (LINGER_RESET, LINGER_RESET)
        # The owner closed both: the other peer must learn that the stream broke (a
        # reset), not see a clean end of stream it could take for a complete one.
        with trio.fail_after(1):
            try:
                data = await other.receive_some()
            except trio.BrokenResourceError as exc:
                assert isinstance(exc.__cause__, ConnectionResetError)
            else:
                pytest.fail(f"the other peer saw a clean end of stream ({data!r}), not a reset")


async def test_abort_ends_the_link_at_once_with_a_reset_to_both_peers(
    tcp_pair: TcpPair, use_splice: bool
) -> None:
    """What the idle sweeper and the drain deadline call: bytes in flight are dropped,
    so neither peer may see a clean end of stream it could take for a complete one."""
    async with running(Pools()) as reactor:
        r = relay(reactor, tcp_pair, use_splice)
        with trio.fail_after(2):
            await r.client.send_all(b"hello")
            assert await receive_exactly(r.server, 5) == b"hello"
            assert r.link is not None
            r.link.abort()
            assert r.done.is_set() and r.link.closed
            r.link.abort()  # twice is harmless
            assert r.done_calls == 1
            assert r.link.traffic.error is None
            assert r.lingers == (LINGER_RESET, LINGER_RESET)
            assert r.link not in reactor.links
            for peer in (r.client, r.server):
                with pytest.raises(trio.BrokenResourceError) as info:
                    await receive_until_eof(peer)
                assert isinstance(info.value.__cause__, ConnectionResetError)


async def test_clean_link_returns_its_pipes_and_buffers_to_the_pool(
    tcp_pair: TcpPair, use_splice: bool
) -> None:
    pools = Pools()
    before = open_fds()
    bulk = bytes(1024 * 1024)
    with trio.fail_after(5):
        async with running(pools) as reactor:
            baseline = open_fds()  # with the reactor's epoll fd
            r = relay(reactor, tcp_pair, use_splice)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(r.client.send_all, bulk)
                nursery.start_soon(r.server.send_all, bulk)
                await receive_exactly(r.server, len(bulk))
                await receive_exactly(r.client, len(bulk))
            await end_cleanly(r)
            r.close_peers()
            assert len(pools.buffers) == 2
            if use_splice:
                # A megabyte each way is a bulk transfer: splice took over in at least one.
                assert 1 <= len(pools.pipes) <= 2
                for pipe_r, _ in pools.pipes:
                    with pytest.raises(BlockingIOError):
                        os.read(pipe_r, 1)  # pooled pipes are empty
            else:
                assert pools.pipes == []
            # Every pipe made is in the pool, none elsewhere.
            assert open_fds() - baseline == {fd for pipe in pools.pipes for fd in pipe}
            kept = sorted(map(id, [*pools.pipes, *pools.buffers]))
            r2 = relay(reactor, tcp_pair, use_splice)
            await end_cleanly(r2)
            r2.close_peers()
            assert sorted(map(id, [*pools.pipes, *pools.buffers])) == kept  # reused
    pools.close()
    assert open_fds() - before == set()


@pytest.mark.parametrize("ending", ["abort", "reset"])
async def test_pipe_holding_data_is_closed_not_pooled(
    tcp_pair: TcpPair, use_splice: bool, ending: str
) -> None:
    """The client stops reading while the server floods: the link ends with bytes in
    flight. The half-drained pipe must be closed, never reused, and no fd may leak."""
    pools = Pools()
    before = open_fds()
    flood = bytes(64 * 1024 * 1024)  # far more than all the socket buffers on the way
    with trio.fail_after(5):
        async with running(pools) as reactor:
            r = relay(reactor, tcp_pair, use_splice)

            async def send_flood() -> None:
                try:
                    await r.server.send_all(flood)
                except trio.BrokenResourceError:
                    pass  # the link ended with unread data: the server gets a reset

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_flood)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert r.link is not None
                assert 0 < r.link.traffic.total < len(flood)  # stuck: the client reads nothing
                if ending == "abort":
                    r.link.abort()
                else:
                    reset(r.client)
                await r.done.wait()
                nursery.cancel_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            for pipe_r, _ in pools.pipes:
                with pytest.raises(BlockingIOError):
                    os.read(pipe_r, 1)  # whatever was pooled is empty
            r.close_peers()
    pools.close()
    assert open_fds() - before == set()


async def test_many_links_leak_no_fds(tcp_pair: TcpPair, use_splice: bool) -> None:
    pools = Pools()
    before = open_fds()
    with trio.fail_after(10):
        async with running(pools) as reactor:
            for i in range(60):
                r = relay(reactor, tcp_pair, use_splice)
                await r.client.send_all(b"ping" * (1 + i * 5000))
                await receive_exactly(r.server, 4 * (1 + i * 5000))
                ending = i % 3
                if ending == 0:
                    await end_cleanly(r)
                elif ending == 1:
                    await trio.testing.wait_all_tasks_blocked()
                    reset(r.server)
                    await r.done.wait()
                else:
                    assert r.link is not None
                    r.link.abort()
                r.close_peers()
                assert r.done_calls == 1
            assert reactor.links == set()
            assert len(pools.pipes) <= 2 and len(pools.buffers) <= 2
    pools.close()
    assert open_fds() - before == set()  # the reactor's epoll fd included


async def test_cancelled_reactor_aborts_every_link_and_returns_promptly(
    tcp_pair: TcpPair, use_splice: bool
) -> None:
    pools = Pools()
    before = open_fds()
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            reactor = Reactor(pools)
            nursery.start_soon(reactor.serve)
            links = [relay(reactor, tcp_pair, use_splice, close_on_done=False) for _ in range(3)]
            for r in links:
                await r.client.send_all(b"hello")
                assert await receive_exactly(r.server, 5) == b"hello"
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    for r in links:
        assert r.done_calls == 1
        assert r.link is not None and r.link.closed and r.link.traffic.error is None
        assert r.lingers == (LINGER_RESET, LINGER_RESET)  # the drain deadline resets
        # Closing is the owner's business: the reactor left the sockets open.
        assert r.proxy_client.fileno() != -1 and r.proxy_server.fileno() != -1
        r.proxy_client.close()
        r.proxy_server.close()
        r.close_peers()
    pools.close()
    assert open_fds() - before == set()  # the epoll fd is closed too
