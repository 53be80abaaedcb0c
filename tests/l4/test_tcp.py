"""TcpFrontend end to end in-process: trio clients -> frontend -> in-process trio servers.

Every server greets with its name and a newline, then echoes until EOF. All sockets are
on 127.0.0.1, bound to port 0 and kept open, so no port is ever picked and released.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from trilb.balance.backend import BackendState
from trilb.config.schema import Address, Backend, Frontend, Server
from trilb.l4.idle import IdleSweeper
from trilb.l4.pump import Pools
from trilb.l4.reactor import Reactor
from trilb.l4.tcp import TcpFrontend


@dataclass
class NamedServer:
    name: bytes
    address: Address
    accepted: int = 0


@asynccontextmanager
async def named_server(name: bytes) -> AsyncIterator[NamedServer]:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = NamedServer(name, Address(*sock.getsockname()))

    async def greet_and_echo(stream: trio.SocketStream) -> None:
        server.accepted += 1
        async with stream:
            try:
                await stream.send_all(name + b"\n")
                async for chunk in stream:
                    await stream.send_all(chunk)
            except trio.BrokenResourceError:
                pass  # the frontend reset the connection: that is its right

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, greet_and_echo, [trio.SocketListener(sock)])
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def dead_server() -> Iterator[Address]:
    """A port bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield Address(*sock.getsockname())


@asynccontextmanager
async def running_frontend(
    servers: list[Address],
    *,
    maxconn: int = 100,
    use_splice: bool = True,
    idle_timeout: float = 300.0,
    tick: float = 0.5,
    more_listeners: tuple[socket.socket, ...] = (),
) -> AsyncIterator[tuple[TcpFrontend, int]]:
    """A TcpFrontend, its sweeper and reactor serving a listener of its own (and
    ``more_listeners``), set up as worker/serve.py does.

    Yields the frontend and its own listener's port.
    """
    backend = Backend(
        name="be",
        servers=tuple(Server(name=f"s{i}", address=a, spec=str(a)) for i, a in enumerate(servers)),
        connect_timeout=1.0,
        retries=2,
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        frontend = Frontend(
            name="fe",
            mode="tcp",
            binds=(Address("127.0.0.1", port),),
            default_backend="be",
            maxconn=maxconn,
            idle_timeout=idle_timeout,
            splice=use_splice,
        )
        pools = Pools()
        sweeper = IdleSweeper(tick=tick)
        reactor = Reactor(pools)
        fe = TcpFrontend(frontend, BackendState(backend), reactor, sweeper)
        async with trio.open_nursery() as handlers:
            handlers.start_soon(sweeper.serve)
            handlers.start_soon(reactor.serve)
            for sock in (listener, *more_listeners):
                handlers.start_soon(fe.serve, sock)
            try:
                yield fe, port
            finally:
                handlers.cancel_scope.cancel()
        pools.close()


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def read_line(stream: trio.SocketStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        assert chunk, f"eof after {line!r}"
        line += chunk
    return line[:-1]


async def wait_idle(fe: TcpFrontend) -> None:
    """Wait until every connection has ended (each end rides on real socket events)."""
    while fe.active:
        await trio.sleep(0.01)
    assert all(slot.active == 0 for slot in fe.backend.slots)


@pytest.mark.parametrize("use_splice", [True, False], ids=["splice", "copy"])
async def test_round_robin_alternates_servers_and_relays_both_ways(use_splice: bool) -> None:
    with trio.fail_after(5):
        async with (
            named_server(b"a") as a,
            named_server(b"b") as b,
            running_frontend([a.address, b.address], use_splice=use_splice) as (fe, port),
        ):
            names = []
            for i in range(4):
                client = await connect(port)
                async with client:
                    names.append(await read_line(client))
                    message = b"ping %d " % i * 1000
                    await client.send_all(message)
                    echoed = b""
                    while len(echoed) < len(message):
                        echoed += await client.receive_some()
                    assert echoed == message
                    await client.send_eof()
                    assert await client.receive_some() == b""  # the server closed after our EOF
            assert sorted(names[:2]) == [b"a", b"b"]
            assert names[2:] == names[:2]
            assert (a.accepted, b.accepted) == (2, 2)
            await wait_idle(fe)


async def test_a_dead_server_is_skipped_by_retry() -> None:
    with trio.fail_after(5), dead_server() as dead:
        async with (
            named_server(b"alive") as alive,
            running_frontend([dead, alive.address]) as (fe, port),
        ):
            for _ in range(4):
                async with await connect(port) as client:
                    assert await read_line(client) == b"alive"
            assert alive.accepted == 4
            await wait_idle(fe)


async def test_all_servers_dead_closes_the_client_promptly() -> None:
    with dead_server() as one, dead_server() as two:
        async with running_frontend([one, two]) as (fe, port):
            for _ in range(3):
                client = await connect(port)
                async with client:
                    with trio.fail_after(1):
                        try:
                            data = await client.receive_some()
                        except trio.BrokenResourceError:
                            data = b""  # a reset is as good as an EOF here
                    assert data == b""
            with trio.fail_after(1):
                await wait_idle(fe)


async def test_maxconn_leaves_the_next_client_in_the_kernel_queue() -> None:
    with trio.fail_after(5):
        async with (
            named_server(b"a") as a,
            running_frontend([a.address], maxconn=1) as (fe, port),
        ):
            first = await connect(port)
            assert await read_line(first) == b"a"
            assert fe.active == 1
            # The handshake completes in the kernel even though trilb does not accept.
            second = socket.create_connection(("127.0.0.1", port), timeout=1)
            second.sendall(b"queued")
            second.setblocking(False)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert fe.active == 1
            assert a.accepted == 1
            with pytest.raises(BlockingIOError):
                second.recv(100)
            await first.aclose()
            waiting = trio.SocketStream(trio.socket.from_stdlib_socket(second))
            async with waiting:
                assert await read_line(waiting) == b"a"
                echoed = b""
                while len(echoed) < 6:
                    echoed += await waiting.receive_some()
                assert echoed == b"queued"
                assert a.accepted == 2
            await wait_idle(fe)


async def test_active_counts_concurrent_connections_then_returns_to_zero() -> None:
    with trio.fail_after(5):
        async with (
            named_server(b"a") as a,
            named_server(b"b") as b,
            running_frontend([a.address, b.address]) as (fe, port),
        ):
            clients = [await connect(port) for _ in range(6)]
            for client in clients:
                assert await read_line(client) in (b"a", b"b")
            assert fe.active == 6
            assert sorted(slot.active for slot in fe.backend.slots) == [3, 3]
            for client in clients:
                await client.aclose()
            await wait_idle(fe)


@pytest.mark.parametrize("use_splice", [True, False], ids=["splice", "copy"])
async def test_client_half_close_still_gets_the_whole_reply(use_splice: bool) -> None:
    payload = bytes(range(256)) * 4000  # ~1 MiB, so the reply outlives the client's FIN
    with trio.fail_after(5):
        async with (
            named_server(b"a") as a,
            running_frontend([a.address], use_splice=use_splice) as (fe, port),
        ):
            async with await connect(port) as client:

                async def send_then_eof() -> None:
                    await client.send_all(payload)
                    await client.send_eof()

                received = bytearray()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_then_eof)
                    while chunk := await client.receive_some():
                        received += chunk
            assert bytes(received) == b"a\n" + payload
            await wait_idle(fe)


async def test_idle_connection_is_closed_after_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Jump the clock only after 10 ms of real quiet, so loopback I/O (connects,
    # greetings) always lands before virtual time moves on.
    autojump_clock.autojump_threshold = 0.01
    idle = 30.0
    with trio.fail_after(idle * 3):
        async with (
            named_server(b"a") as a,
            running_frontend([a.address], idle_timeout=idle, tick=1.0) as (fe, port),
        ):
            async with await connect(port) as client:
                assert await read_line(client) == b"a"
                silent_since = trio.current_time()
                with pytest.raises(trio.BrokenResourceError):  # reset by the frontend
                    await client.receive_some()
                waited = trio.current_time() - silent_since
            assert idle <= waited <= idle + 2.0
            await wait_idle(fe)


async def test_no_fd_left_for_the_upstream_socket_closes_only_that_client() -> None:
    """accept() takes the last free descriptor, so open_tcp cannot create its socket."""
    async with (
        named_server(b"a") as a,
        running_frontend([a.address]) as (fe, port),
    ):
        client = socket.socket()  # made before the descriptors run out
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        fillers: list[int] = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 32, hard))
            while True:
                try:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
                except OSError as exc:
                    assert exc.errno == errno.EMFILE
                    break
            os.close(fillers.pop())  # exactly one descriptor left, for accept()
            client.settimeout(1)
            client.connect(("127.0.0.1", port))  # completes in the kernel's queue
            tclient = trio.socket.from_stdlib_socket(client)
            with trio.fail_after(1):
                try:
                    data = await tclient.recv(100)
                except ConnectionResetError:
                    data = b""
            assert data == b""
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            client.close()
        with trio.fail_after(2):
            async with await connect(port) as again:
                assert await read_line(again) == b"a"
            await wait_idle(fe)


async def test_every_listener_resumes_accepting_after_maxconn() -> None:
    """A frontend with two binds, at maxconn=1: each bind's accept loop waits for room."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(16)
        other.setblocking(False)
        other_port = other.getsockname()[1]
        with trio.fail_after(5):
            async with (
                named_server(b"a") as a,
                running_frontend([a.address], maxconn=1, more_listeners=(other,)) as (fe, port),
            ):
                first = await connect(port)
                assert await read_line(first) == b"a"
                # Both accept loops now wait for room: the first bind's one after its
                # accept, the other's once a connection queues on it.
                second = await connect(other_port)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert a.accepted == 1
                await first.aclose()
                assert await read_line(second) == b"a"
                await second.aclose()
                await wait_idle(fe)
                # Room again: a client of the first bind must be served too.
                with trio.move_on_after(2):
                    third = await connect(port)
                    async with third:
                        assert await read_line(third) == b"a"
                assert a.accepted == 3, "the first bind never accepted again after maxconn"
