"""obs.logging.Throttle: once per interval, counting what it held back."""

from __future__ import annotations

from trilb.obs.logging import Throttle


def test_throttle_lets_one_through_per_interval_and_counts_the_rest() -> None:
    t = Throttle(5.0)
    assert t.allow(100.0) == 0
    assert [t.allow(now) for now in (101.0, 102.0, 104.9)] == [None, None, None]
    assert t.allow(105.0) == 3
    assert t.allow(105.1) is None
    assert t.allow(200.0) == 1
