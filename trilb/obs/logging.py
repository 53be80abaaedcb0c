"""Process logging setup: stderr lines with a timestamp and the process role.

Owns the format and the role label ("master", "worker 1"). Access logs are not here
(they come with the L7 proxy). Called once per process, never at import time.
"""

from __future__ import annotations

import logging
import sys
import time

_FORMAT = "%(asctime)s.%(msecs)03d %(role)s[%(process)d] %(levelname)s %(name)s: %(message)s"
_DATEFMT = "%Y-%m-%dT%H:%M:%S"


class _RoleFilter(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        return True


def setup_logging(role: str, level: str = "info") -> None:
    """Send all trilb logs to stderr, labelled with ``role``; replaces earlier setup.

    A forked child calls this again with its own role, so the handler is rebuilt.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(_FORMAT, _DATEFMT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RoleFilter(role))
    root.addHandler(handler)
    root.setLevel(level.upper())


class Throttle:
    """Lets a repeated log line through at most once per interval, counting the rest.

    For events that can come once per connection (no server available, accept
    failing): an operator needs to know, not ten thousand lines a second.
    """

    __slots__ = ("interval", "last", "suppressed")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.suppressed = 0

    def allow(self, now: float) -> int | None:
        """None: stay quiet. Otherwise log now; returns how many were not logged before."""
        if now - self.last < self.interval:
            self.suppressed += 1
            return None
        count, self.suppressed, self.last = self.suppressed, 0, now
        return count
