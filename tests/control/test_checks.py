"""The health checks' rise/fall state and the shared health bytes, without sockets."""

from __future__ import annotations

import os

from trilb.config.load import parse_config
from trilb.config.schema import Config, Health
from trilb.control.checks import CheckState
from trilb.control.shared import SharedHealth


def test_fall_then_rise() -> None:
    state = CheckState(Health(rise=2, fall=3))
    assert [state.record(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert state.up  # a pass in between starts the count again
    assert state.record(False) and not state.up  # the third failure in a row
    assert not state.record(True) and not state.up
    assert state.record(True) and state.up  # rise = 2


def test_a_reload_keeps_the_verdicts_of_unchanged_backends() -> None:
    def config(a_servers: list[str]) -> Config:
        return parse_config({
            "frontends": {"w": {"mode": "tcp", "bind": "127.0.0.1:0", "default_backend": "a"}},
            "backends": {"a": {"servers": a_servers, "health": {}},
                         "b": {"servers": ["127.0.0.1:3", "127.0.0.1:4"], "health": {}}},
        })  # fmt: skip

    old_config = config(["127.0.0.1:1", "127.0.0.1:2"])
    old = SharedHealth(old_config)
    old.set("a", 1, False)
    old.set("b", 0, False)
    new_config = config(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:5"])  # a changed
    new = SharedHealth(new_config)
    new.inherit(old, old_config, new_config)
    assert new.states("a", 3) == b"\x01\x01\x01"  # its servers changed: checks anew
    assert new.states("b", 2) == b"\x00\x01"  # the same servers: what was known stays


def test_the_shared_bytes_are_seen_by_a_forked_child() -> None:
    config = parse_config({
        "frontends": {"w": {"mode": "http", "bind": "127.0.0.1:0", "default_backend": "a"}},
        "backends": {
            "a": {"servers": ["127.0.0.1:1", "127.0.0.1:2"], "health": {}},
            "b": {"servers": ["127.0.0.1:3"]},
            "c": {"servers": ["127.0.0.1:4"], "health": {"type": "http"}},
        },
    })  # fmt: skip
    shared = SharedHealth(config)
    assert shared.offsets == {"a": 0, "c": 2} and shared.states("a", 2) == b"\x01\x01"
    pid = os.fork()
    if pid == 0:  # the control process's side
        shared.set("a", 1, False)
        shared.set("c", 0, False)
        os._exit(0)
    os.waitpid(pid, 0)
    assert shared.states("a", 2) == b"\x01\x00" and shared.states("c", 1) == b"\x00"
    shared.close()
