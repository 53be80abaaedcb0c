"""Every exception trilb raises on purpose, and where each one ends.

ConfigError ends at the command line (exit status 2 with its key path); StartupError
ends start-up before any worker is forked; UpstreamError ends in the proxy that picks
another server or gives up. Raw OSError and trio errors are translated into these at
one edge per I/O type, never scattered. This module defines the types only; it does
not map errors to exit codes or HTTP statuses (cli.py and the L7 proxy do).
"""

from __future__ import annotations


class TrilbError(Exception):
    """Base class of every error trilb raises on purpose."""


class ConfigError(TrilbError):
    """A configuration file is invalid.

    Args:
      path: the dotted key path, for example ``frontends.web.default_backend``.
      message: what was expected and what was found, lowercase, no final period.
      file: the configuration file, when known.
    """

    def __init__(self, path: str, message: str, file: str | None = None) -> None:
        self.path = path
        self.message = message
        self.file = file
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class StartupError(TrilbError):
    """trilb cannot start (or apply a reload): a port is taken, a pidfile is unwritable."""


class UpstreamError(TrilbError):
    """Talking to a backend server failed.

    Args:
      kind: a short machine-readable class: ``refused``, ``timeout``, ``unreachable``,
        ``reset``.
      retryable: whether the same request may be tried on another server.
    """

    def __init__(self, kind: str, message: str, retryable: bool) -> None:
        self.kind = kind
        self.retryable = retryable
        super().__init__(message)
