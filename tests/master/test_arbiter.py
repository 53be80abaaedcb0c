"""The arbiter's commands, called directly and without forking.

A reload that is rejected never reaches fork(), so these tests build the state start()
would have left (generation 1 and its sockets) by hand, and check that a bad reload
leaves it untouched. Pids given to handle_child_exit are beyond pid_max: nothing is
ever signalled.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trilb.config.load import load_config
from trilb.config.schema import Address, Config, Global
from trilb.master.arbiter import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    HEALTHY_AFTER,
    READY_TIMEOUT,
    Arbiter,
    Child,
    Generation,
    resolve_workers,
)

# Linux caps pids at 2**22, so these can never name a real process.
FAKE_PID = 10**9

GOOD = """
[global]
workers = 2

[frontends.db]
mode = "tcp"
bind = "127.0.0.1:0"
default_backend = "pg"

[backends.pg]
servers = ["127.0.0.1:5432"]
"""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "trilb.toml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def arbiter(config_file: Path) -> Iterator[Arbiter]:
    """An Arbiter in the state start() leaves, minus the forked workers."""
    config = load_config(config_file)
    arb = Arbiter(str(config_file), config)
    slots = resolve_workers(config)
    arb.sockets.ensure(config, slots)
    arb.generations.append(Generation(1, config, slots, time.monotonic()))
    yield arb
    arb.sockets.close_all()


def test_resolve_workers_number(config_file: Path) -> None:
    assert resolve_workers(load_config(config_file)) == 2
    assert resolve_workers(load_config(config_file, workers=5)) == 5


def test_resolve_workers_auto(config_file: Path) -> None:
    config_file.write_text(GOOD.replace("workers = 2", 'workers = "auto"'))
    config = load_config(config_file)
    assert config.global_.workers is None
    assert resolve_workers(config) == len(os.sched_getaffinity(0))
    assert resolve_workers(Config(source="x", global_=Global(workers=None))) >= 1


def test_constructing_an_arbiter_binds_and_forks_nothing(config_file: Path) -> None:
    config = load_config(config_file)
    before = open_fds()
    arb = Arbiter(str(config_file), config, workers=3)
    assert open_fds() == before
    assert arb.generations == []
    assert arb.children == {}
    assert arb.signals is None


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param("[frontends.db\n", id="not-toml"),
        pytest.param(
            GOOD.replace('default_backend = "pg"', 'default_backend = "pgg"'), id="unknown-backend"
        ),
        pytest.param(GOOD.replace('mode = "tcp"', 'mode = "quic"'), id="unknown-mode"),
        pytest.param(None, id="file-removed"),
    ],
)
def test_invalid_reload_changes_nothing(
    arbiter: Arbiter, config_file: Path, rewrite: str | None
) -> None:
    gen = arbiter.current
    generations = list(arbiter.generations)
    socks = [arbiter.sockets.for_slot(gen.config, s)["db"][0] for s in range(gen.slots)]
    port = arbiter.sockets.actual(Address("127.0.0.1", 0))
    if rewrite is None:
        config_file.unlink()
    else:
        config_file.write_text(rewrite)
    fds = open_fds()
    assert arbiter.handle_reload() is False
    assert arbiter.generations == generations
    assert arbiter.current is gen
    assert (gen.number, gen.slots, gen.draining, gen.children) == (1, 2, False, {})
    assert arbiter.children == {}
    assert open_fds() == fds
    assert [arbiter.sockets.for_slot(gen.config, s)["db"][0] for s in range(2)] == socks
    assert all(s.fileno() != -1 for s in socks)
    assert arbiter.sockets.actual(Address("127.0.0.1", 0)) == port


def test_reload_onto_a_taken_port_is_rejected(arbiter: Arbiter, config_file: Path) -> None:
    gen = arbiter.current
    socks = [arbiter.sockets.for_slot(gen.config, s)["db"][0] for s in range(gen.slots)]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        config_file.write_text(
            GOOD.replace("workers = 2", "workers = 3")
            + f'[frontends.other]\nmode = "tcp"\nbind = "127.0.0.1:{taken}"\n'
            + 'default_backend = "pg"\n'
        )
        # The new file is valid: only the socket layer can reject it.
        assert len(load_config(config_file).frontends) == 2
        fds = open_fds()
        assert arbiter.handle_reload() is False
        assert open_fds() == fds
    assert arbiter.generations == [gen]
    assert arbiter.children == {}
    assert [arbiter.sockets.for_slot(gen.config, s)["db"][0] for s in range(2)] == socks
    assert all(s.fileno() != -1 for s in socks)
    with pytest.raises(KeyError):
        arbiter.sockets.for_slot(gen.config, 2)  # the third slot's socket was rolled back


def test_reload_is_refused_while_stopping(arbiter: Arbiter, config_file: Path) -> None:
    config_file.write_text("not toml [")
    arbiter.stopping = True
    assert arbiter.handle_reload() is False
    assert len(arbiter.generations) == 1


def add_child(arbiter: Arbiter, gen: Generation, slot: int, age: float, pid: int) -> Child:
    child = Child(pid, slot, gen, time.monotonic() - age, None)
    arbiter.children[pid] = child
    gen.children[slot] = child
    return child


def test_young_deaths_back_off_exponentially(arbiter: Arbiter) -> None:
    gen = arbiter.current
    delays = []
    for _ in range(3):
        add_child(arbiter, gen, 0, age=0.0, pid=FAKE_PID)
        before = time.monotonic()
        arbiter.handle_child_exit(FAKE_PID, 1 << 8)  # exit status 1
        delays.append(arbiter.respawn_at[(gen.number, 0)] - before)
        assert FAKE_PID not in arbiter.children
        assert 0 not in gen.children
    assert delays == pytest.approx([BACKOFF_MIN * 2, BACKOFF_MIN * 4, BACKOFF_MIN * 8], abs=0.05)
    assert arbiter.failures[0] == 3
    assert arbiter.generations == [gen]
    # A worker that lived past HEALTHY_AFTER resets the streak.
    add_child(arbiter, gen, 0, age=HEALTHY_AFTER + 1, pid=FAKE_PID)
    before = time.monotonic()
    arbiter.handle_child_exit(FAKE_PID, 9)  # killed by SIGKILL
    assert arbiter.failures[0] == 0
    assert arbiter.respawn_at[(gen.number, 0)] - before == pytest.approx(BACKOFF_MIN, abs=0.05)


def test_back_off_is_capped(arbiter: Arbiter) -> None:
    arbiter.failures[1] = 5000  # 2**5000 would overflow a float: the exponent is capped too
    add_child(arbiter, arbiter.current, 1, age=0.0, pid=FAKE_PID)
    before = time.monotonic()
    arbiter.handle_child_exit(FAKE_PID, 1 << 8)
    assert arbiter.respawn_at[(arbiter.current.number, 1)] - before == pytest.approx(
        BACKOFF_MAX, abs=0.05
    )


def test_unknown_pid_is_ignored(arbiter: Arbiter) -> None:
    arbiter.handle_child_exit(FAKE_PID, 0)
    assert arbiter.respawn_at == {}
    assert arbiter.generations[0].children == {}


def test_old_generation_drains_once_the_new_one_is_ready_and_leaves_when_empty(
    arbiter: Arbiter, config_file: Path
) -> None:
    old = arbiter.current
    old_socks = [arbiter.sockets.for_slot(old.config, s)["db"][0] for s in range(2)]
    config_file.write_text(GOOD.replace("workers = 2", "workers = 1"))
    new_config = load_config(config_file)
    arbiter.sockets.ensure(new_config, 1)
    new = Generation(2, new_config, 1, time.monotonic())
    arbiter.generations.append(new)
    add_child(arbiter, old, 0, age=60.0, pid=FAKE_PID)
    add_child(arbiter, old, 1, age=60.0, pid=FAKE_PID + 1)
    fresh = add_child(arbiter, new, 0, age=0.0, pid=FAKE_PID + 2)
    arbiter.tick(time.monotonic())
    assert not old.draining  # the new generation has not said it is ready yet
    fresh.ready = True
    arbiter.tick(time.monotonic())
    assert old.draining and arbiter.current is new
    # The socket only the old generation used (slot 2) closes as draining starts, so
    # no connection queues where nobody accepts; slot 1's passes to the new one.
    assert old_socks[1].fileno() == -1
    assert old_socks[0].fileno() != -1
    assert arbiter.sockets.for_slot(new_config, 0)["db"][0] is old_socks[0]
    arbiter.handle_child_exit(FAKE_PID, 0)
    assert arbiter.generations == [old, new]
    arbiter.handle_child_exit(FAKE_PID + 1, 0)
    assert arbiter.generations == [new]
    assert arbiter.respawn_at == {}  # draining workers are not replaced


def test_a_new_generation_that_never_gets_ready_is_given_up_and_the_old_one_kept(
    arbiter: Arbiter, config_file: Path
) -> None:
    old = arbiter.current
    add_child(arbiter, old, 0, age=60.0, pid=FAKE_PID).ready = True
    new = Generation(2, old.config, 2, time.monotonic() - READY_TIMEOUT - 1)
    arbiter.generations.append(new)
    add_child(arbiter, new, 0, age=READY_TIMEOUT + 1, pid=FAKE_PID + 1)
    arbiter.tick(time.monotonic())
    assert new.draining and not old.draining
    assert arbiter.current is old


def test_a_worker_that_closes_its_ready_pipe_without_the_byte_is_not_ready(
    arbiter: Arbiter,
) -> None:
    r, w = os.pipe()
    child = add_child(arbiter, arbiter.current, 0, age=0.0, pid=FAKE_PID)
    child.ready_fd = r
    os.close(w)  # the worker died before writing
    arbiter.handle_ready(r)
    assert child.ready is False and child.ready_fd is None
    r, w = os.pipe()
    child.ready_fd = r
    os.write(w, b"r")
    os.close(w)
    arbiter.handle_ready(r)
    assert child.ready is True
