"""The health checks' rise/fall state, without sockets."""

from __future__ import annotations

from trilb.config.schema import Health
from trilb.control.checks import CheckState


def test_fall_then_rise() -> None:
    state = CheckState(Health(rise=2, fall=3))
    assert [state.record(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert state.up  # a pass in between starts the count again
    assert state.record(False) and not state.up  # the third failure in a row
    assert not state.record(True) and not state.up
    assert state.record(True) and state.up  # rise = 2
