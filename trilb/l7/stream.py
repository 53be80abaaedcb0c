"""The L7 socket edge: a connected non-blocking socket, read and written syscall first.

Owns the translation of socket errors into trilb's (the one edge for L7 I/O):
ClientClosed / ClientTimeout on the client side, UpstreamError on a backend's. Each
call tries the syscall first and waits for readiness only on EAGAIN, as DESIGN.md's
measurements ask. Deadlines are not cancel scopes (about 11 µs each, per request
phase): a phase arms the worker's sweeper, which past the deadline wakes the waiting
task through trio.lowlevel.notify_closing; the wait then raises ClosedResourceError,
which becomes the timeout error here. It does not parse anything.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

import trio
from trio.lowlevel import wait_readable, wait_writable

from trilb.errors import ClientClosed, ClientTimeout, UpstreamError
from trilb.l4.idle import Deadline, IdleSweeper

if TYPE_CHECKING:
    from trilb.l4.reactor import Reactor
    from trilb.l7.http1 import ResponseParser

# "Try again later" from a plain socket, or from a TLS one (whose read may need to write).
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
# Bytes asked of one recv: a whole request head or a good slice of a body.
RECV_SIZE = 65536
# Any of these on an idle pooled connection means it is unusable: bytes nobody asked
# for (POLLIN), the server's close (POLLIN, POLLRDHUP), or an error.
_NOT_IDLE = select.POLLIN | select.POLLPRI | select.POLLRDHUP
_STIRRED = select.EPOLLIN | select.EPOLLPRI | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR


class Peer(Protocol):
    """What body relays and the request half of a proxy exchange need of either side: a
    Stream, or an HTTP/2 stream that reads and writes like one (l7/http2.py)."""

    upstream: bool
    name: str
    responding: bool

    async def recv(self, size: int = RECV_SIZE) -> bytes: ...

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    def touch(self) -> None: ...

    def arm(self, timeout: float, phase: str) -> None: ...

    def disarm(self) -> None: ...

    def wake(self) -> object:
        """Interrupt a wait for this side: it raises the side's timeout error."""


class Stream:
    """One side of an exchange: the client's socket, or a backend connection."""

    __slots__ = (
        "_poller",
        "closed",
        "fd",
        "name",
        "on_idle_event",
        "parser",
        "peer",
        "phase",
        "quiet",
        "reactor",
        "responding",
        "rx",
        "sock",
        "sweeper",
        "tally",
        "timeout",
        "timer",
        "tls",
        "tx",
        "upstream",
        "wake",
    )  # fmt: skip

    def __init__(
        self, sock: socket.socket, sweeper: IdleSweeper, upstream: bool, name: str = ""
    ) -> None:
        self.sock = sock
        # TLS: a read returns one record at most, so only "would block" means drained.
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.fd = sock.fileno()  # trio's waits take it as it is; a socket costs a call
        self.sweeper = sweeper
        self.upstream = upstream
        self.name = name  # the server's name, for messages (never its address)
        # What a deadline does for a trio task waiting on this socket; an owner driven by
        # the reactor sets its own ``timer.on_expire`` and puts this back when done.
        self.wake: Callable[[], object] = partial(trio.lowlevel.notify_closing, sock)
        # One deadline object per stream, re-armed per phase: no allocation per request.
        self.timer = Deadline(0.0, self.wake)
        self.phase = ""
        self.timeout = 0.0
        self.closed = False
        # Client side: bytes of the current response went out (no error status now).
        self.responding = False
        # A backend connection's response parser, kept with it across requests.
        self.parser: ResponseParser | None = None
        self._poller: select.poll | None = None
        # The reactor watching this socket, if one is (l7/client.py): told before close.
        self.reactor: Reactor | None = None
        # A backend connection the reactor watches: no epoll event came on it since a
        # check found it open and empty, so ``alive`` needs no syscall. The reactor calls
        # ``on_idle_event`` for events while no exchange of its own reads the socket
        # (pooled, or a task's), which ends the quiet.
        self.quiet = False
        self.on_idle_event: Callable[[int], None] = self._stirred
        # The counters bytes read and written are added to (obs/counters.py: the
        # frontend's for a client, the server's for a backend connection), at ``rx`` and
        # ``tx``; the code that reads the socket itself adds with ``took``.
        self.tally: list[int] | None = None
        self.rx = self.tx = 0
        # A backend connection: the address it was opened to (a dns: slot may move on).
        self.peer: object = None

    def count_into(self, tally: list[int], rx: int, tx: int) -> None:
        self.tally, self.rx, self.tx = tally, rx, tx

    def took(self, n: int) -> None:
        """``n`` bytes were read from the socket by its owner."""
        if self.tally is not None:
            self.tally[self.rx] += n

    def gave(self, n: int) -> None:
        """``n`` bytes were written to the socket by its owner."""
        if self.tally is not None:
            self.tally[self.tx] += n

    def arm(self, timeout: float, phase: str) -> None:
        """Start (or restart) this stream's deadline for the next waits, until ``disarm``."""
        timer = self.timer
        timer.deadline = self.sweeper.now() + timeout
        timer.expired = False
        self.phase = phase
        self.timeout = timeout
        self.sweeper.deadlines.add(timer)

    def touch(self) -> None:
        """Progress was made: the armed phase's deadline starts again (an inactivity
        timeout, as HAProxy's and nginx's are). A deadline that already passed stays."""
        timer = self.timer
        if not timer.expired:
            timer.deadline = self.sweeper.now() + self.timeout

    def disarm(self) -> None:
        self.sweeper.deadlines.discard(self.timer)
        self.timer.expired = False

    async def recv(self, size: int = RECV_SIZE) -> bytes:
        """Up to ``size`` bytes; b"" at the peer's end of stream."""
        sock = self.sock
        while True:
            try:
                data = sock.recv(size)
            except WOULD_BLOCK as exc:
                # (TLS: a read may need to write first, a key update's answer)
                writing = isinstance(exc, ssl.SSLWantWriteError)
                await self._wait(wait_writable if writing else wait_readable)
            except OSError as exc:
                raise self._broken(exc) from None
            else:
                if self.tally is not None:
                    self.tally[self.rx] += len(data)
                return data

    async def recv_later(self, size: int = RECV_SIZE) -> bytes:
        """Like recv, for data that cannot be there yet (a response just asked for, the
        next request on a keep-alive connection): wait first, and save the read that
        would only say EAGAIN (and the exception Python makes of it). Once per request
        each way, so written out rather than built from _wait and recv."""
        if self.timer.expired:
            raise self._timed_out()
        try:
            await wait_readable(self.fd)
        except trio.ClosedResourceError:
            raise self._timed_out() from None  # the sweeper's notify_closing
        try:
            data = self.sock.recv(size)
        except WOULD_BLOCK:
            return await self.recv(size)  # woken with nothing to read after all
        except OSError as exc:
            raise self._broken(exc) from None
        if self.tally is not None:
            self.tally[self.rx] += len(data)
        return data

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the socket takes without waiting; returns how many bytes went.

        The per-request path calls this and awaits ``send_rest`` only when a head or
        body does not fit the socket buffer: no coroutine per send otherwise.
        """
        self.responding = True
        try:
            sent = self.sock.send(data)
        except WOULD_BLOCK:
            return 0  # (TLS: the same bytes must be offered again, as send_rest does)
        except OSError as exc:
            raise self._broken(exc) from None
        if self.tally is not None:
            self.tally[self.tx] += sent
        return sent

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sent = self.send_nowait(data)
        if sent < len(data):
            await self.send_rest(data, sent)

    async def send_rest(self, data: bytes | bytearray | memoryview, sent: int) -> None:
        """Send ``data`` from offset ``sent`` on, waiting for room as needed."""
        sock = self.sock
        with memoryview(data) as view:
            while sent < len(view):
                await self._wait(wait_writable)
                try:
                    n = sock.send(view[sent:])
                except WOULD_BLOCK:
                    pass
                except OSError as exc:
                    raise self._broken(exc) from None
                else:
                    sent += n
                    if self.tally is not None:
                        self.tally[self.tx] += n

    def alive(self) -> bool:
        """For an idle pooled connection: still open, and nothing unsolicited queued.

        Watched by the reactor, a connection that had no epoll event since the last
        check needs none: the server's close or unsolicited bytes would have made one (an
        edge, as HAProxy learns of it from its poller). Otherwise a poll with no timeout
        rather than a peek: the healthy answer of a peek is EAGAIN, which Python turns
        into an exception.
        """
        if self.quiet:
            return True
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.fd, _NOT_IDLE)
        if poller.poll(0):
            return False
        self.quiet = self.reactor is not None  # events from now on reach _stirred
        return True

    def _stirred(self, events: int) -> None:
        if events & _STIRRED:  # (not a write-space edge)
            self.quiet = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.disarm()
            if self.reactor is not None:
                self.reactor.unwatch(self.fd, closing=True)
            self.on_idle_event = _ignore  # (a reference cycle through the bound method)
            if isinstance(self.sock, ssl.SSLSocket):
                _close_notify(self.sock)
            self.sock.close()
            if self.parser is not None:
                self.parser.close()  # it and its llhttp refer to each other

    async def _wait(self, wait: Callable[[int], Awaitable[None]]) -> None:
        # A deadline that passed while this task waited on the other socket woke no
        # one (notify_closing wakes waits on this socket only): it counts now.
        if self.timer.expired:
            raise self._timed_out()
        try:
            await wait(self.fd)
        except trio.ClosedResourceError:
            raise self._timed_out() from None  # the sweeper's notify_closing

    def _timed_out(self) -> Exception:
        if self.upstream:
            return UpstreamError("timeout", f"server {self.name}: {self.phase} timed out",
                                 retryable=False)  # fmt: skip
        return ClientTimeout(self.phase)

    def _broken(self, exc: OSError) -> Exception:
        if self.upstream:
            return UpstreamError("reset", f"server {self.name}: {exc.strerror}", retryable=False)
        return ClientClosed(exc.strerror or str(exc))


def _close_notify(sock: ssl.SSLSocket) -> None:
    """Send TLS's close_notify, if the socket takes it now: a client reading a body to
    the end of the connection tells that end from a truncation by it."""
    try:
        sock.unwrap()  # sends ours, then would wait for the peer's: not waited for
    except (OSError, ValueError):
        pass


def _ignore(events: int) -> None:
    """The idle-event callback of a closed stream."""
