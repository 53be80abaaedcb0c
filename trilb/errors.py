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


class ClientClosed(TrilbError):
    """The client went away (closed or reset): there is nobody left to answer."""


class ClientTimeout(TrilbError):
    """The client was too slow for a deadline of the config.

    Args:
      phase: ``"head"`` (request head not complete: 408), ``"body"`` (request body
        stalled: 408) or ``"idle"`` (no new request on a keep-alive connection: close
        quietly).
    """

    def __init__(self, phase: str) -> None:
        self.phase = phase
        super().__init__(f"client timeout while waiting for the request {phase}")


class ProtocolError(TrilbError):
    """A peer sent HTTP that trilb will not pass on: malformed, ambiguous or over a limit.

    Raised by the sans-IO parsers in ``trilb.l7``; the proxy answers ``status`` (a client's
    request) or 502 (a backend's response, already mapped here) and closes the connection,
    whose framing can no longer be trusted.

    Args:
      status: the HTTP status to answer: 400, 413, 414, 417, 431, 501 or 505 for a request,
        502 for a backend's response, 500 when trilb itself built an invalid head.
      message: what was wrong and the offending value, lowercase, no final period.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class ExchangeAborted(TrilbError):
    """A response broke off after its head had gone to the client.

    No error status can be sent any more (it would land inside the body): the client
    connection is closed, and the cause is logged.
    """
