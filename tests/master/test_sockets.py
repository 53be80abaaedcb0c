"""The master's listening sockets: one SO_REUSEPORT socket per (bind, slot), all or nothing."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import pytest

from trilb.config.load import parse_config
from trilb.config.schema import Address, Config
from trilb.errors import StartupError
from trilb.master.sockets import SocketSet

ANY_PORT = Address("127.0.0.1", 0)


def make_config(frontends: dict[str, str | list[str]], **extra: object) -> Config:
    """A tcp Config whose frontends bind the given addresses (all to one backend)."""
    raw = {
        "frontends": {
            name: {"mode": "tcp", "bind": bind, "default_backend": "pg", **extra}
            for name, bind in frontends.items()
        },
        "backends": {"pg": {"servers": ["127.0.0.1:5432"]}},
    }
    return parse_config(raw)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def sockets() -> Iterator[SocketSet]:
    s = SocketSet()
    yield s
    s.close_all()


@pytest.fixture
def held() -> Iterator[socket.socket]:
    """A plain listener on a kernel-chosen loopback port: someone else owns that port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


@pytest.fixture
def reserved() -> Iterator[list[int]]:
    """Two loopback ports kept out of other hands without making them "in use" for us.

    A socket bound with SO_REUSEADDR that never listens keeps the port reserved (so the
    test does not pick a free port and race for it), while a later SO_REUSEADDR bind +
    listen from SocketSet on the same port is still allowed by Linux.
    """
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def test_one_listener_per_slot_on_one_kernel_port(sockets: SocketSet) -> None:
    config = make_config({"db": "127.0.0.1:0"})
    sockets.ensure(config, 3)
    per_slot = [sockets.for_slot(config, slot) for slot in range(3)]
    assert all(list(group) == ["db"] and len(group["db"]) == 1 for group in per_slot)
    socks = [group["db"][0] for group in per_slot]
    assert len({id(s) for s in socks}) == 3
    actual = sockets.actual(ANY_PORT)
    assert actual.host == "127.0.0.1"
    assert actual.port != 0
    for s in socks:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert s.getsockname() == ("127.0.0.1", actual.port)
        assert not s.getblocking()
    with pytest.raises(KeyError):
        sockets.for_slot(config, 3)
    with socket.create_connection(actual.sockaddr, timeout=2):
        pass


def test_actual_of_a_fixed_port_is_itself(sockets: SocketSet, reserved: list[int]) -> None:
    addr = Address("127.0.0.1", reserved[0])
    config = make_config({"db": str(addr)})
    sockets.ensure(config, 2)
    assert sockets.actual(addr) == addr
    assert [port_of(sockets.for_slot(config, s)["db"][0]) for s in (0, 1)] == [addr.port] * 2


@pytest.mark.parametrize("as_list", [False, True])
def test_taken_port_fails_and_keeps_nothing(
    sockets: SocketSet, held: socket.socket, as_list: bool
) -> None:
    taken = f"127.0.0.1:{port_of(held)}"
    bind: str | list[str] = ["127.0.0.1:0", taken] if as_list else taken
    config = make_config({"first": "127.0.0.1:0", "second": bind})
    before = open_fds()
    with pytest.raises(StartupError) as info:
        sockets.ensure(config, 2)
    key = "frontends.second.bind[1]" if as_list else "frontends.second.bind"
    assert str(info.value) == f"{key}: cannot listen on {taken}: address already in use"
    assert open_fds() == before
    with pytest.raises(KeyError):
        sockets.for_slot(config, 0)


def test_taken_port_keeps_earlier_sockets(sockets: SocketSet, held: socket.socket) -> None:
    old = make_config({"db": "127.0.0.1:0"})
    sockets.ensure(old, 2)
    kept = [sockets.for_slot(old, s)["db"][0] for s in (0, 1)]
    before = open_fds()
    new = make_config({"db": "127.0.0.1:0", "other": f"127.0.0.1:{port_of(held)}"})
    with pytest.raises(StartupError, match=r"^frontends\.other\.bind: .*address already in use"):
        sockets.ensure(new, 3)
    assert open_fds() == before
    assert [sockets.for_slot(old, s)["db"][0] for s in (0, 1)] == kept
    assert all(s.fileno() != -1 for s in kept)


def test_failed_ensure_forgets_kernel_ports(sockets: SocketSet, held: socket.socket) -> None:
    # All or nothing includes the remembered port: a port no socket of ours holds any
    # more must be probed again before use, or a stranger's SO_REUSEPORT group could
    # be joined silently.
    config = make_config({"first": "127.0.0.1:0", "second": f"127.0.0.1:{port_of(held)}"})
    with pytest.raises(StartupError):
        sockets.ensure(config, 1)
    assert sockets.actual(ANY_PORT) == ANY_PORT


def test_reuseport_holder_does_not_join_our_group(sockets: SocketSet) -> None:
    stranger = socket.socket()
    stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    stranger.bind(("127.0.0.1", 0))
    stranger.listen()
    with stranger:
        config = make_config({"db": f"127.0.0.1:{port_of(stranger)}"})
        with pytest.raises(StartupError, match=r"^frontends\.db\.bind: .*address already in use"):
            sockets.ensure(config, 1)


def test_ensure_is_idempotent(sockets: SocketSet) -> None:
    config = make_config({"db": "127.0.0.1:0"})
    sockets.ensure(config, 2)
    first = [sockets.for_slot(config, s)["db"][0] for s in (0, 1)]
    port = sockets.actual(ANY_PORT)
    fds = open_fds()
    sockets.ensure(config, 2)
    sockets.ensure(make_config({"db": "127.0.0.1:0"}, maxconn=5), 2)
    assert [sockets.for_slot(config, s)["db"][0] for s in (0, 1)] == first
    assert sockets.actual(ANY_PORT) == port
    assert open_fds() == fds


def test_more_slots_reuse_the_kernel_port(sockets: SocketSet) -> None:
    config = make_config({"db": "127.0.0.1:0"})
    sockets.ensure(config, 1)
    slot0 = sockets.for_slot(config, 0)["db"][0]
    sockets.ensure(config, 3)
    assert sockets.for_slot(config, 0)["db"][0] is slot0
    ports = {port_of(sockets.for_slot(config, s)["db"][0]) for s in range(3)}
    assert ports == {sockets.actual(ANY_PORT).port}


def test_for_slot_groups_by_frontend(sockets: SocketSet, reserved: list[int]) -> None:
    p1, p2 = reserved
    config = make_config({"a": "127.0.0.1:0", "b": [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]})
    sockets.ensure(config, 2)
    a_port = sockets.actual(ANY_PORT).port
    for slot in (0, 1):
        group = sockets.for_slot(config, slot)
        assert sorted(group) == ["a", "b"]
        assert [port_of(s) for s in group["a"]] == [a_port]
        assert [port_of(s) for s in group["b"]] == [p1, p2]
    s0, s1 = sockets.for_slot(config, 0), sockets.for_slot(config, 1)
    assert not {id(s) for g in s0.values() for s in g} & {id(s) for g in s1.values() for s in g}


def test_two_port_zero_frontends_get_separate_ports(sockets: SocketSet) -> None:
    # The loader lets several frontends bind port 0 because "the kernel picks a
    # distinct port for each"; they must not end up sharing one listener.
    config = make_config({"a": "127.0.0.1:0", "b": "127.0.0.1:0"})
    sockets.ensure(config, 1)
    group = sockets.for_slot(config, 0)
    assert group["a"][0] is not group["b"][0]
    assert port_of(group["a"][0]) != port_of(group["b"][0])


def test_retire_closes_only_unwanted_slots(sockets: SocketSet) -> None:
    config = make_config({"db": "127.0.0.1:0"})
    sockets.ensure(config, 3)
    socks = [sockets.for_slot(config, s)["db"][0] for s in range(3)]
    port = sockets.actual(ANY_PORT)
    sockets.retire([(config, 1)])
    assert [s.fileno() != -1 for s in socks] == [True, False, False]
    assert sockets.for_slot(config, 0)["db"][0] is socks[0]
    with pytest.raises(KeyError):
        sockets.for_slot(config, 1)
    assert sockets.actual(ANY_PORT) == port
    sockets.retire([])
    assert socks[0].fileno() == -1
    assert sockets.actual(ANY_PORT) == ANY_PORT


def test_retire_keeps_every_live_generation(sockets: SocketSet, reserved: list[int]) -> None:
    old = make_config({"a": "127.0.0.1:0"})
    new = make_config({"b": f"127.0.0.1:{reserved[0]}"})
    sockets.ensure(old, 2)
    sockets.ensure(new, 1)
    a = [sockets.for_slot(old, s)["a"][0] for s in (0, 1)]
    b = sockets.for_slot(new, 0)["b"][0]
    sockets.retire([(old, 2), (new, 1)])
    assert all(s.fileno() != -1 for s in [*a, b])
    sockets.retire([(new, 1)])
    assert [s.fileno() for s in a] == [-1, -1]
    assert b.fileno() != -1
    assert sockets.for_slot(new, 0)["b"][0] is b


def test_queued_connection_survives_a_new_generation(sockets: SocketSet) -> None:
    gen1 = make_config({"db": "127.0.0.1:0"})
    sockets.ensure(gen1, 1)
    listener = sockets.for_slot(gen1, 0)["db"][0]
    with socket.create_connection(sockets.actual(ANY_PORT).sockaddr, timeout=2) as client:
        gen2 = make_config({"db": "127.0.0.1:0"}, idle_timeout="1m")
        sockets.ensure(gen2, 2)
        sockets.retire([(gen2, 2)])
        assert sockets.for_slot(gen2, 0)["db"][0] is listener
        readable, _, _ = select.select([listener], [], [], 2.0)
        assert readable == [listener]
        conn, peer = listener.accept()
        with conn:
            assert peer == client.getsockname()
            client.sendall(b"still here")
            conn.settimeout(2)
            assert conn.recv(100) == b"still here"


def test_close_except_keeps_only_the_given_sockets(sockets: SocketSet) -> None:
    config = make_config({"db": "127.0.0.1:0"})
    sockets.ensure(config, 3)
    socks = [sockets.for_slot(config, s)["db"][0] for s in range(3)]
    sockets.close_except([socks[1]])
    assert [s.fileno() != -1 for s in socks] == [False, True, False]


def test_close_all(sockets: SocketSet) -> None:
    config = make_config({"db": "127.0.0.1:0"})
    sockets.ensure(config, 2)
    socks = [sockets.for_slot(config, s)["db"][0] for s in (0, 1)]
    sockets.close_all()
    assert [s.fileno() for s in socks] == [-1, -1]
    with pytest.raises(KeyError):
        sockets.for_slot(config, 0)
