"""How a dns: entry's answers become its server slots (control/resolve.py ``assign``),
and resolv.conf's nameservers; no sockets."""

from __future__ import annotations

from pathlib import Path

from trilb.config.load import parse_config
from trilb.config.schema import Address
from trilb.control.resolve import assign, system_nameservers
from trilb.control.shared import DOWN, UP, SharedState


def test_addresses_keep_their_slots_and_new_ones_take_free_ones() -> None:
    config = parse_config({
        "frontends": {"w": {"mode": "tcp", "bind": "127.0.0.1:0", "default_backend": "b"}},
        "backends": {"b": {"servers": ["127.0.0.1:9", "dns:api.test:80"], "dns_slots": 3}},
    })  # fmt: skip
    backend = config.backends["b"]
    shared = SharedState(config, 1)
    slots = [1, 2, 3]
    assert [shared.address("b", i) for i in slots] == [None, None, None]
    changes, out = assign(shared, backend, slots, 80, ["10.0.0.1", "10.0.0.2"])
    assert changes == ["10.0.0.1 added (api.test-1)", "10.0.0.2 added (api.test-2)"]
    shared.set_health("b", 2, False)  # (its check failed meanwhile)
    changes, out = assign(shared, backend, slots, 80, ["10.0.0.2", "10.0.0.3", "fd00::4"])
    # 10.0.0.2 stays in slot 2; .1 leaves slot 1, which .3 takes; ::4 finds no room.
    assert changes == ["10.0.0.1 left (api.test-1)", "10.0.0.3 added (api.test-1)",
                       "fd00::4 added (api.test-3)"]  # fmt: skip
    assert out == []
    assert shared.address("b", 1) == Address("10.0.0.3", 80)
    assert shared.address("b", 2) == Address("10.0.0.2", 80)
    assert shared.address("b", 3) == Address("fd00::4", 80)
    assert shared.server_state("b")[0][1:4] == bytes([UP, DOWN, UP])  # (new ones start up)
    changes, out = assign(shared, backend, slots, 80, ["10.0.0.9", "10.0.0.2", "10.0.0.3",
                                                       "fd00::4"])  # fmt: skip
    assert changes == [] and out == ["10.0.0.9"]  # all three slots taken
    assert shared.address("b", 0) == Address("127.0.0.1", 9)  # the fixed server is untouched
    shared.close()


def test_nameservers_come_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\n"
                    "nameserver not-an-ip\noptions ndots:5\n")  # fmt: skip
    assert system_nameservers(str(conf)) == [Address("10.0.0.53", 53), Address("fe80::1", 53)]
    assert system_nameservers(str(tmp_path / "missing")) == [Address("127.0.0.1", 53)]
