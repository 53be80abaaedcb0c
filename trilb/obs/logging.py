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


def flush_logging() -> None:
    """Flush handlers before os._exit, which skips Python's own cleanup."""
    for h in logging.getLogger().handlers:
        h.flush()
