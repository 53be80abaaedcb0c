"""IdleSweeper: the sweep as pure logic over a fake clock, then serve() over real links."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from tests.conftest import TcpPair
from trilb.l4.idle import IdleSweeper, Watched
from trilb.l4.pump import Pools, Traffic
from trilb.l4.reactor import Link, Reactor


class Conn:
    """The least a connection must offer the sweeper (idle.Abortable); counts aborts."""

    def __init__(self) -> None:
        self.traffic = Traffic()
        self.aborts = 0

    def abort(self) -> None:
        self.aborts += 1


def watched(sweeper: IdleSweeper, idle: float, now: float = 0.0) -> Watched:
    """What IdleSweeper.watch does, with the start time given instead of read from trio."""
    w = Watched(Conn(), idle, now)
    sweeper.watched.add(w)
    return w


def aborts(w: Watched) -> int:
    conn = w.conn
    assert isinstance(conn, Conn)
    return conn.aborts


# (time of the sweep, bytes moved just before it, aborted by that sweep?)
SILENT = [(1.0, 0, False), (9.99, 0, False), (10.0, 0, True), (20.0, 0, False)]
# Bytes moved at t=5 restart the count from that sweep: idle again only at t=15.
MOVED_ONCE = [(5.0, 1, False), (14.99, 0, False), (15.0, 0, True)]
# A trickle of one byte per 9 s never lets 10 s of silence pass.
TRICKLE = [(9.0 * i, 1, False) for i in range(1, 12)]


@pytest.mark.parametrize("steps", [SILENT, MOVED_ONCE, TRICKLE], ids=["silent", "moved", "trickle"])
def test_sweep_aborts_after_idle_seconds_without_traffic(
    steps: list[tuple[float, int, bool]],
) -> None:
    sweeper = IdleSweeper()
    w = watched(sweeper, idle=10.0)
    expected_aborts = 0
    for now, moved, expect_abort in steps:
        w.conn.traffic.total += moved
        expected_aborts += expect_abort
        assert sweeper.sweep(now) == int(expect_abort), f"sweep at t={now}"
        assert aborts(w) == expected_aborts, f"sweep at t={now}"
        assert w.aborted == (expected_aborts > 0)


def test_sweep_applies_each_connection_its_own_timeout() -> None:
    sweeper = IdleSweeper()
    short, long_, busy = watched(sweeper, 5.0), watched(sweeper, 30.0), watched(sweeper, 5.0)
    for now in range(1, 41):
        busy.conn.traffic.total += 10
        assert sweeper.sweep(float(now)) == (1 if now in (5, 30) else 0), f"sweep at t={now}"
        assert aborts(short) == (1 if now >= 5 else 0)
        assert aborts(long_) == (1 if now >= 30 else 0)
    assert aborts(busy) == 0


def test_sweep_counts_bytes_in_either_direction() -> None:
    sweeper = IdleSweeper()
    w = watched(sweeper, 10.0)
    w.conn.traffic.total += 3  # downstream bytes: up stays 0
    sweeper.sweep(9.0)
    assert sweeper.sweep(18.0) == 0
    assert sweeper.sweep(19.0) == 1


def test_sweep_survives_an_abort_that_unwatches_at_once() -> None:
    """Owners may end a connection inside abort() and unwatch it there (l4/tcp.py does,
    through the reactor's on_done): the sweep must not trip over its own set."""
    sweeper = IdleSweeper()
    ws = [watched(sweeper, 10.0) for _ in range(5)]

    class Unwatching(Conn):
        def __init__(self, w: Watched) -> None:
            super().__init__()
            self.w = w

        def abort(self) -> None:
            super().abort()
            sweeper.unwatch(self.w)

    for w in ws:
        w.conn = Unwatching(w)
    assert sweeper.sweep(10.0) == 5
    assert sweeper.watched == set()
    assert [aborts(w) for w in ws] == [1] * 5


async def test_watch_starts_now_and_unwatch_removes() -> None:
    sweeper = IdleSweeper()
    kept_conn, gone_conn = Conn(), Conn()
    kept = sweeper.watch(kept_conn, 10.0)
    gone = sweeper.watch(gone_conn, 10.0)
    now = trio.current_time()
    assert sweeper.sweep(now + 9.0) == 0
    sweeper.unwatch(gone)
    sweeper.unwatch(gone)  # twice is harmless
    assert sweeper.watched == {kept}
    assert sweeper.sweep(now + 10.0) == 1
    assert (kept_conn.aborts, gone_conn.aborts) == (1, 0)


async def test_sweep_expires_a_connect_past_its_deadline(tcp_pair: TcpPair) -> None:
    """The waiting task is woken with ClosedResourceError; an unexpired one is left alone."""
    sweeper = IdleSweeper()
    late, _ = tcp_pair()
    on_time, _ = tcp_pair()
    # Fill the send buffers so that both sockets block in wait_writable.
    for sock in (late, on_time):
        try:
            while True:
                sock.send(bytes(65536))
        except BlockingIOError:
            pass
    woken: dict[str, str] = {}

    async def wait(name: str, sock: socket.socket, timeout: float) -> None:
        watch = sweeper.watch_connect(sock, timeout)
        try:
            await trio.lowlevel.wait_writable(sock)
            woken[name] = "writable"
        except trio.ClosedResourceError:
            woken[name] = "expired"
        finally:
            sweeper.unwatch_connect(watch)

    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "late", late, 5.0)
            nursery.start_soon(wait, "on_time", on_time, 50.0)
            await trio.testing.wait_all_tasks_blocked()
            now = trio.current_time()
            assert sweeper.sweep(now + 4.9) == 0
            assert sweeper.sweep(now + 5.0) == 1
            await trio.testing.wait_all_tasks_blocked()
            assert woken == {"late": "expired"}
            assert len(sweeper.deadlines) == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("use_splice", [True, False], ids=["splice", "copy"])
async def test_serve_aborts_a_silent_link_and_spares_a_busy_one(
    tcp_pair: TcpPair, use_splice: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Two real links in a Reactor, owned the way l4/tcp.py owns them: watched when
    added, unwatched (and closed) in on_done."""
    idle, tick = 30.0, 1.0
    sweeper = IdleSweeper(tick=tick)
    pools = Pools()
    silent_client, silent_proxy_client = tcp_pair()
    silent_proxy_server, silent_server = tcp_pair()
    busy_client, busy_proxy_client = tcp_pair()
    busy_proxy_server, busy_server = tcp_pair()
    watches: dict[Link, Watched] = {}
    ended: dict[str, float] = {}
    all_done = trio.Event()

    def on_done(link: Link) -> None:
        sweeper.unwatch(watches.pop(link))
        ended["silent" if link.client is silent_proxy_client else "busy"] = trio.current_time()
        link.client.close()
        link.server.close()
        if len(ended) == 2:
            all_done.set()

    async def trickle(until: float) -> None:
        """One byte every 5 s up, read at the server end, until ``until``."""
        client = trio.socket.from_stdlib_socket(busy_client)
        server = trio.socket.from_stdlib_socket(busy_server)
        while trio.current_time() < until:
            await client.send(b".")
            assert await server.recv(1) == b"."
            await trio.sleep(5.0)
        client.shutdown(socket.SHUT_WR)
        server.shutdown(socket.SHUT_WR)

    start = trio.current_time()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            reactor = Reactor(pools)
            nursery.start_soon(reactor.serve)
            nursery.start_soon(sweeper.serve)
            silent = reactor.add(silent_proxy_client, silent_proxy_server, use_splice, on_done)
            busy = reactor.add(busy_proxy_client, busy_proxy_server, use_splice, on_done)
            for link in (silent, busy):
                watches[link] = sweeper.watch(link, idle)
            nursery.start_soon(trickle, start + 2 * idle)
            await all_done.wait()
            nursery.cancel_scope.cancel()

    assert idle <= ended["silent"] - start <= idle + 2 * tick
    assert silent.traffic.error is None
    # An idle abort resets both peers: nothing in flight passes for a complete stream.
    for peer in (silent_client, silent_server):
        with pytest.raises(ConnectionResetError):
            peer.recv(1)
    assert ended["busy"] - start >= 2 * idle, "a link moving a byte every 5 s was aborted as idle"
    assert busy.traffic.error is None
    assert busy.traffic.up == busy.traffic.total >= 12
    assert sweeper.watched == set()
    pools.close()
