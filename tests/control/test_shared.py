"""The generation's shared mapping (control/shared.py): server states, weights and the
workers' counters, as seen across a fork; a reload's inheritance. No sockets."""

from __future__ import annotations

import os

from trilb.config.load import parse_config
from trilb.config.schema import Address, Config
from trilb.control.shared import DRAIN, MAINT, READY, SharedState
from trilb.obs.counters import F_CONNECTIONS, S_TOTAL, SERVER_COUNTERS


def config(a_servers: list[object], b_weight: int = 3) -> Config:
    return parse_config({
        "frontends": {"w": {"mode": "tcp", "bind": "127.0.0.1:0", "default_backend": "a"},
                      "u": {"mode": "udp", "bind": "127.0.0.1:0", "default_backend": "b"}},
        "backends": {"a": {"servers": a_servers, "health": {}},
                     "b": {"servers": ["127.0.0.1:3",
                                       {"address": "127.0.0.1:4", "weight": b_weight}]}},
    })  # fmt: skip


def test_a_reload_keeps_what_is_known_of_the_servers_it_keeps() -> None:
    old_config = config(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:6"])
    old = SharedState(old_config, 2)
    old.set_health("a", 1, False)
    old.set_health("a", 2, False)
    old.set_health("b", 0, False)
    old.set_admin("b", 1, DRAIN)
    old.set_weight("b", 0, 7)
    old.set_weight("b", 1, 9)
    # a: :5 added, :6 gone, :2 renamed (another server to trilb); b: :4's weight changed
    new_config = config(["127.0.0.1:1", {"address": "127.0.0.1:2", "name": "two"},
                         "127.0.0.1:5"], b_weight=4)  # fmt: skip
    new = SharedState(new_config, 1)
    new.inherit(old, old_config, new_config)
    # only :1 is the same server: it keeps its (up) verdict; the others start up
    assert new.server_state("a") == (b"\x01\x01\x01", bytes([READY] * 3), [1, 1, 1])
    # b keeps its verdicts and operator states; :3 the API's weight (its config weight
    # is unchanged), :4 the config's new weight (the file is newer than the API's 9)
    assert new.server_state("b") == (b"\x00\x01", bytes([READY, DRAIN]), [7, 4])
    old.close()
    new.close()


def test_states_and_counters_cross_the_fork() -> None:
    shared = SharedState(config(["127.0.0.1:1", "127.0.0.1:2"]), 2)
    assert shared.server_state("b") == (b"\x01\x01", bytes([READY, READY]), [1, 3])
    pid = os.fork()
    if pid == 0:  # a worker publishes its block; the control process sets states
        block = shared.worker_block(1)
        block[shared.server_offset("b", 1) + S_TOTAL] = 5
        block[shared.frontend_offset("u") + F_CONNECTIONS] = 9
        shared.set_admin("a", 0, MAINT)
        shared.set_weight("b", 1, 0)
        os._exit(0)
    os.waitpid(pid, 0)
    shared.worker_block(0)[shared.server_offset("b", 1) + S_TOTAL] = 2
    totals = shared.totals()
    assert totals[shared.server_offset("b", 1) + S_TOTAL] == 7  # summed over workers
    assert totals[shared.frontend_offset("u") + F_CONNECTIONS] == 9
    assert shared.server_offset("b", 0) == 2 * SERVER_COUNTERS  # after a's two servers
    assert shared.server_state("a")[1] == bytes([MAINT, READY])
    assert shared.server_state("b")[2] == [1, 0]
    shared.close()


def test_changes_the_old_generation_took_after_the_fork_are_replayed() -> None:
    old_config = config(["127.0.0.1:1", "127.0.0.1:2"])
    old = SharedState(old_config, 1)
    new = SharedState(old_config, 1)
    new.inherit(old, old_config, old_config)
    seen = old.operator()
    old.set_admin("a", 0, MAINT)  # answered by the old control process, mid hand-over
    old.set_weight("b", 1, 8)
    new.set_admin("a", 1, DRAIN)  # answered by the new one
    new.replay(old, old_config, old_config, seen)
    assert new.server_state("a")[1] == bytes([MAINT, DRAIN])  # both kept
    assert new.server_state("b")[2] == [1, 8]
    old.close()
    new.close()


def test_workers_wait_for_dns_only_while_an_entry_has_no_address_and_lookups_go_on() -> None:
    plain = SharedState(config(["127.0.0.1:1"]), 1)
    assert not plain.awaiting_dns(config(["127.0.0.1:1"]))
    with_dns = config(["127.0.0.1:1", "dns:app.test:80", "dns:db.test:80"])
    shared = SharedState(with_dns, 1)
    assert shared.awaiting_dns(with_dns)
    shared.set_address("a", 1, Address("127.0.0.2", 80))  # app.test has one; db.test none
    assert shared.awaiting_dns(with_dns)
    shared.set_address("a", 1 + with_dns.backends["a"].dns_slots, Address("127.0.0.3", 80))
    assert not shared.awaiting_dns(with_dns)  # (a reload that inherits addresses: no wait)
    empty = SharedState(with_dns, 1)
    empty.resolved[0] = 1  # the control process's first lookups are over, answered or not
    assert not empty.awaiting_dns(with_dns)
    for state in (plain, shared, empty):
        state.close()
