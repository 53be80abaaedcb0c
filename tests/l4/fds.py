"""Descriptor checks shared by the L4 tests."""

from __future__ import annotations

import os


def open_fds() -> frozenset[int]:
    """The descriptors open now. Checks compare sets, not counts: another test's thread
    may close one of its own meanwhile, which a count would blame on this test. (The
    listing's own descriptor is closed again by the time it is checked: left out.)"""
    return frozenset(fd for fd in map(int, os.listdir("/proc/self/fd")) if _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
