"""Signals in the master: turned into bytes on a pipe, read by the main loop.

The master's loop blocks in select(); signal.set_wakeup_fd writes each caught
signal's number to a pipe so select wakes up, and the loop handles the signal as
ordinary data (no work inside a signal handler, no EINTR juggling). This module owns
that plumbing and the reset a forked child must do; what a signal means is the
arbiter's business.
"""

from __future__ import annotations

import os
import signal

# The master acts on these; everything else keeps its default disposition.
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1)


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing: the wakeup fd already carries the signal number."""


class SignalPipe:
    """Collects the master's signals on a non-blocking pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, _ignore)

    def read(self) -> list[int]:
        """Every signal number delivered since the last read, in order."""
        out: list[int] = []
        while True:
            try:
                data = os.read(self.read_fd, 256)
            except BlockingIOError:
                return out
            if not data:
                return out
            out.extend(data)

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self.read_fd)
        os.close(self.write_fd)


def reset_in_child(pipe: SignalPipe) -> None:
    """Undo the master's signal setup in a freshly forked worker.

    SIGINT and SIGHUP are ignored: a Ctrl-C or a closed terminal reaches the whole
    process group, and the master alone decides how workers stop (it sends SIGTERM).
    SIGUSR1 (reopen the access log, which the master passes on) and SIGUSR2 (a control
    process's generation drains) are ignored until the child's event loop takes them.
    """
    signal.set_wakeup_fd(-1)
    os.close(pipe.read_fd)
    os.close(pipe.write_fd)
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
