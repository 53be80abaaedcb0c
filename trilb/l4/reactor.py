"""Relaying established TCP connections from one edge-triggered epoll per worker.

Theory of operation. Measured on this project's 2-core box, a trio wait costs about
10 µs of Python (a task switch, an epoll_ctl to re-arm trio's one-shot registration,
an outcome object), a nursery about 50 µs and a cancel scope about 11 µs; relaying a
small request and its response through two trio tasks needed at least two waits per
message, and trio's scheduler, not the syscalls, was most of a worker's CPU. So
connections are driven from one edge-triggered epoll per worker instead (only the
accept loops stay trio tasks):

- a connecting socket is registered once (``connecting``); its owner's callback hears
  how the connect ended, and the same registration then serves the relay (``add``);
- each socket is registered once, edge-triggered, for input and output; one trio task
  waits on the reactor's epoll fd and, when it is readable, calls the pump of each
  ready socket's directions (l4/pump.py): no task switch and no re-arming per event;
- a direction that spent its budget is resumed after the reactor task has yielded to
  trio once, so bulk transfers cannot starve accepts, connects or other links;
- a link ends when both directions have relayed their end of stream, or at once on a
  socket error (both peers get a reset), an idle timeout or the drain deadline
  (``abort``); its owner's ``on_done`` then closes the sockets.

Cancellation: the reactor task lives in the worker's handler nursery; cancelling it
(the drain deadline) aborts every link it still holds. A failing callback or pump
ends its own connection, never the reactor. It does not accept, choose servers or
time anything out (l4/tcp.py, l4/idle.py): it dispatches readiness and relays.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
from collections.abc import Callable

from trio.lowlevel import checkpoint, wait_readable

from trilb.l4.pump import Direction, Owner, Pools, Traffic

log = logging.getLogger(__name__)

# Events taken per poll() call: enough that a busy worker drains its ready list in a
# few calls, few enough that one batch does not hold up trio's other tasks for long.
MAX_EVENTS = 512
# Batches dispatched back to back before the reactor task lets trio run its other tasks.
POLL_ROUNDS = 4
_LINGER_RESET = struct.pack("ii", 1, 0)
_HUP = select.EPOLLRDHUP | select.EPOLLHUP
_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET


class Link:
    """An established client/server pair relayed by a Reactor."""

    __slots__ = (
        "__weakref__",
        "client",
        "closed",
        "down",
        "on_done",
        "pools",
        "reactor",
        "server",
        "traffic",
        "up",
        "use_splice",
    )  # fmt: skip

    def __init__(
        self,
        reactor: Reactor,
        client: socket.socket,
        server: socket.socket,
        use_splice: bool,
        on_done: Callable[[Link], None],
    ) -> None:
        self.reactor = reactor
        self.pools = reactor.pools
        self.client = client
        self.server = server
        self.use_splice = use_splice
        self.on_done = on_done
        self.traffic = Traffic()
        self.closed = False
        cfd, sfd = client.fileno(), server.fileno()
        self.up = Direction(self, cfd, sfd, True)
        self.down = Direction(self, sfd, cfd, False)

    def later(self, d: Direction) -> None:
        self.reactor.later.append(d)

    def half_closed(self, d: Direction) -> None:
        try:
            (self.server if d is self.up else self.client).shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone; its own direction will notice
        if self.up.done and self.down.done:
            self.close()

    def fail(self, exc: OSError) -> None:
        """A socket error: both peers get a reset."""
        if self.closed:
            return
        self.traffic.error = exc
        self._set_reset()
        self.close()

    def _set_reset(self) -> None:
        for sock in (self.client, self.server):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass

    def abort(self) -> None:
        """End the link now (idle timeout, drain deadline), with a reset to both peers.

        A reset, not a FIN: bytes still in flight are dropped, and a clean end of
        stream would let a peer take a truncated transfer for a complete one.
        """
        self._set_reset()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reactor.remove(self)
        self.up.release(self.pools)
        self.down.release(self.pools)
        self.on_done(self)


class Reactor:
    """One per worker: the epoll fd, its dispatch task, and the links it relays."""

    def __init__(self, pools: Pools) -> None:
        self.pools = pools
        self.ep = select.epoll()
        # fd -> (direction reading it, direction writing it)
        self.fds: dict[int, tuple[Direction, Direction]] = {}
        # fd -> callback, for sockets still connecting (registered, not yet a link) and
        # for sockets whose owner handles readiness itself (HTTP connections, l7/client.py)
        self.callbacks: dict[int, Callable[[int], None]] = {}
        self.links: set[Link] = set()
        self.later: list[Direction] = []

    def connecting(self, sock: socket.socket, on_event: Callable[[int], None]) -> None:
        """Watch a socket whose non-blocking connect is in progress.

        ``on_event`` gets the epoll events; the registration (already the one a link
        uses) carries over when the owner then calls ``add`` with this socket as the
        server, or ends with ``forget``.
        """
        self.watch(sock.fileno(), on_event)

    def watch(self, fd: int, on_event: Callable[[int], None], edge: bool = True) -> None:
        """Call ``on_event`` with the epoll events of ``fd`` (edge-triggered, input and
        output) until ``unwatch``; the owner may swap the callback in ``callbacks``.

        ``edge=False``: level-triggered input only (a listening socket: its owner may
        stop accepting with connections still queued and hear of them again).
        """
        self.ep.register(fd, _MASK if edge else select.EPOLLIN)
        self.callbacks[fd] = on_event

    def unwatch(self, fd: int, closing: bool = False) -> None:
        """Stop watching ``fd``; call it before the socket is closed.

        ``closing``: the socket is closed right after (and never duplicated): the kernel
        drops it from the epoll set itself, so no epoll_ctl is spent on it.
        """
        if self.callbacks.pop(fd, None) is not None and not closing:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass

    def forget(self, sock: socket.socket) -> None:
        """Stop watching a connecting socket (before the owner closes it)."""
        self.unwatch(sock.fileno())

    def add(
        self,
        client: socket.socket,
        server: socket.socket,
        use_splice: bool,
        on_done: Callable[[Link], None],
    ) -> Link:
        """Start relaying a connected pair; the first bytes move right away."""
        link = Link(self, client, server, use_splice, on_done)
        self.links.add(link)
        self.fds[link.up.src] = (link.up, link.down)
        self.fds[link.down.src] = (link.down, link.up)
        try:
            self.ep.register(link.up.src, _MASK)
            if self.callbacks.pop(link.down.src, None) is None:
                self.ep.register(link.down.src, _MASK)
        except BaseException:
            self.remove(link)  # on_done is not called: the caller still owns the sockets
            raise
        link.up.pump()
        if not link.closed:
            link.down.pump()
        return link

    def remove(self, link: Link) -> None:
        self.links.discard(link)
        for fd in (link.up.src, link.down.src):
            if self.fds.pop(fd, None) is not None:
                try:
                    self.ep.unregister(fd)
                except OSError:
                    pass

    async def serve(self) -> None:
        """Dispatch readiness until cancelled; then abort every link."""
        ep = self.ep
        epfd = ep.fileno()
        fds = self.fds
        callbacks = self.callbacks
        try:
            while True:
                if self.later:
                    await checkpoint()
                else:
                    await wait_readable(epfd)
                # Under load, events keep coming while a batch is dispatched: polling again
                # at once (a few times, then trio gets its turn) saves the trio wake-up
                # and its epoll calls that each new batch would otherwise cost.
                for _ in range(POLL_ROUNDS):
                    events = ep.poll(0, MAX_EVENTS)
                    for fd, ev in events:
                        sides = fds.get(fd)
                        if sides is None:
                            on_event = callbacks.get(fd)
                            if on_event is not None:
                                try:
                                    on_event(ev)
                                except Exception:
                                    # The owner's callback failed: its connection is lost,
                                    # the worker is not.
                                    log.exception("reactor callback failed")
                            continue  # or: its link ended earlier in this batch
                        try:
                            if ev & select.EPOLLERR and not sides[0].link.closed:
                                sides[0].link.fail(_socket_error(fd))
                                continue
                            if ev & _IN:
                                sides[0].pump(ev & _HUP)
                            if ev & _OUT and sides[1].left:
                                sides[1].pump()
                        except Exception as exc:
                            _broken(sides[0].link, exc)
                    if self.later:
                        later, self.later = self.later, []
                        for d in later:
                            try:
                                d.pump()
                            except Exception as exc:
                                _broken(d.link, exc)
                        break  # budgets spent: trio's turn first (checkpoint above)
                    if not events:
                        break
        finally:
            for link in list(self.links):
                link.abort()
            ep.close()


def _socket_error(fd: int) -> OSError:
    """The pending error of a socket that epoll reported with EPOLLERR."""
    sock = socket.socket(fileno=fd)
    try:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        sock.detach()
    return OSError(code, os.strerror(code) if code else "socket error")


def _broken(link: Owner, exc: Exception) -> None:
    """A bug in relaying one link: log it and end that link, not the worker."""
    log.exception("relay failed")
    if not link.closed:
        link.fail(OSError(0, f"internal error: {exc!r}"))
