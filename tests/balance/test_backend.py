"""Passive checks in a backend's state (balance/backend.py): ejections after failures
in a row, the way back, probation; no sockets, the clock passed in."""

from __future__ import annotations

import logging

import pytest

from trilb.balance.backend import BackendState
from trilb.config.schema import Address, Backend, Server
from trilb.control.shared import DRAIN, MAINT, READY
from trilb.obs.counters import S_FAILURES


def state(
    eject_after: int = 3, eject_for: float = 10.0, retries: int = 1, names: str = "ab"
) -> BackendState:
    servers = tuple(Server(n, Address("127.0.0.1", 9000 + i), f"127.0.0.1:{9000 + i}")
                    for i, n in enumerate(names))  # fmt: skip
    backend = Backend(name="app", servers=servers, retries=retries, eject_after=eject_after,
                      eject_for=eject_for)  # fmt: skip
    return BackendState(backend)


def test_failures_in_a_row_eject_a_server_until_its_time_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = state()
    a, b = s.slots
    caplog.set_level(logging.INFO, "trilb.balance.backend")
    s.failed(a, 0.0, "refused")
    s.succeeded(a)  # a success in between starts the count again
    s.failed(a, 1.0, "refused")
    s.failed(a, 2.0, "refused")
    assert a.up
    s.failed(a, 3.0, "timeout")
    assert not a.up and s.ejected == {0: 13.0}
    assert (
        "backend app: server a out for 10s: 3 failures in a row, the last: timeout" in caplog.text
    )
    assert [slot.name for slot in s.attempts(None)] == ["b"]  # the balancer skips it
    s.restore(12.9)
    assert not a.up
    s.restore(13.0)
    assert a.up and s.ejected == {} and "server a back in the balancing" in caplog.text
    # On probation: one failure before a success takes it out again.
    s.failed(a, 14.0, "refused")
    assert not a.up and s.ejected == {0: 24.0}
    s.restore(24.0)
    s.succeeded(a)
    s.failed(a, 25.0, "refused")
    assert a.up and b.up


def test_the_last_server_left_is_never_ejected() -> None:
    s = state(eject_after=1)
    a, b = s.slots
    s.failed(a, 0.0, "refused")
    assert not a.up
    s.failed(b, 0.0, "refused")  # b is the last one up: it stays
    assert b.up and s.ejected == {0: 10.0}


def test_eject_after_zero_never_ejects() -> None:
    s = state(eject_after=0)
    for t in range(100):
        s.failed(s.slots[0], float(t), "refused")
    assert s.slots[0].up and s.ejected == {}


def test_an_ejection_by_another_cause_is_one_ejection() -> None:
    s = state()
    a = s.slots[0]
    s.eject(a, 0.0, 5.0, "icmp port unreachable")
    s.eject(a, 1.0, 5.0, "again")  # (already out: the first deadline stands)
    assert s.ejected == {0: 5.0}
    s.restore(5.0)
    assert a.up


def test_health_verdicts_and_ejections_both_keep_a_server_out() -> None:
    s = state(eject_after=1, eject_for=5.0, names="abc")
    a, b, _ = s.slots
    s.sync(b"\x00\x01\x01", READY3, [1, 1, 1])  # the health check says a is down
    assert not a.up and b.up
    s.failed(b, 0.0, "refused")  # b ejected by a passive check (c is still up)
    assert not b.up
    s.sync(b"\x01\x01\x01", READY3, [1, 1, 1])  # a passes again; b's check passes but it is ejected
    assert a.up and not b.up
    s.restore(5.0)
    assert b.up
    s.sync(b"\x01\x00\x01", READY3, [1, 1, 1])
    s.restore(100.0)  # (nothing ejected: the check's verdict stands)
    assert not b.up


READY3 = bytes([READY]) * 3


def test_operator_states_and_weights_reach_the_slots() -> None:
    s = state(eject_after=1, eject_for=5.0, names="abc")
    a, b, c = s.slots
    up = b"\x01\x01\x01"
    s.sync(up, bytes([DRAIN, MAINT, READY]), [1, 1, 4])
    # Drained: still up (its connections finish) but never picked; maint: out.
    assert a.up and a.weight == 0 and not b.up and c.weight == 4
    assert {s.balancer.pick().name for _ in range(10)} == {"c"}  # type: ignore[union-attr]
    s.failed(c, 0.0, "refused")  # the last server taking traffic is not ejected
    assert c.up
    s.sync(up, READY3, [1, 1, 4])  # ready again
    assert a.up and a.weight == 1 and b.up
    s.failed(b, 0.0, "refused")
    s.sync(up, bytes([READY, MAINT, READY]), [1, 1, 4])
    s.sync(up, READY3, [1, 1, 4])  # out of maint, but still ejected by the passive check
    assert not b.up
    s.restore(5.0)
    assert b.up and a.counts[S_FAILURES] == 0 and b.counts[S_FAILURES] == 1


def test_5xx_answers_count_as_failures_and_others_as_successes() -> None:
    s = state(eject_after=2, eject_for=5.0)
    a, _ = s.slots
    s.observed(a, 503, 0.0)
    s.observed(a, 200, 0.0)  # a success in between: the count starts again
    s.observed(a, 500, 0.0)
    assert a.up
    s.observed(a, 502, 1.0)
    assert not a.up and s.ejected == {0: 6.0}
    assert a.counts[S_FAILURES] == 0  # (the failures counter is for connects)
