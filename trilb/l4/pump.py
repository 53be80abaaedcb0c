"""Moving bytes between two connected TCP sockets, both ways, until both sides finish.

Theory of operation. Each direction is a loop that tries the syscall first and waits
for readiness only on EAGAIN (trio.SocketStream would add a task switch and wrapper
layers to every call; DESIGN.md measured the difference). The default path is
``os.splice``: socket -> pipe -> socket, so payload bytes never enter user space (the
trick HAProxy uses). Pipes come from a per-worker pool and go back only when empty. A
socket type splice refuses (EINVAL) falls back to recv_into/send over a pooled buffer,
which is also what ``splice = false`` selects; on loopback both measured alike.

Half-close: a read of 0 bytes means the peer sent FIN; we shut down the write side of
the other socket and keep relaying the opposite direction until it ends too. A reset
or any other socket error aborts both directions, and both sockets are closed with
SO_LINGER 0 so the other peer sees a reset too rather than a clean end of stream.

Fairness: a direction that never hits EAGAIN (a bulk transfer) checkpoints every
CHECKPOINT_BYTES so other tasks and cancellation still run.

Idle timeout is not handled here (no per-syscall deadline): the caller's sweeper
compares the byte counters between sweeps, which costs nothing per chunk.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Callable

import trio
from trio.lowlevel import checkpoint, wait_readable, wait_writable

# Bytes asked of one splice/recv. 64 KiB is the default pipe capacity on Linux.
CHUNK = 65536
# Pipe capacity set on new pipes: room for one whole CHUNK.
PIPE_SIZE = 65536
# A bulk direction yields to the scheduler after this many bytes without blocking.
CHECKPOINT_BYTES = 512 * 1024
# Pipes and buffers kept for reuse per worker; beyond this they are freed.
POOL_MAX = 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_LINGER_RESET = struct.pack("ii", 1, 0)


class Pools:
    """Per-worker pools of pipes (for splice) and buffers (for recv/send)."""

    def __init__(self) -> None:
        self.pipes: list[tuple[int, int]] = []
        self.buffers: list[bytearray] = []

    def get_pipe(self) -> tuple[int, int]:
        if self.pipes:
            return self.pipes.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # keep the kernel's default size
        return r, w

    def put_pipe(self, pipe: tuple[int, int], empty: bool) -> None:
        if empty and len(self.pipes) < POOL_MAX:
            self.pipes.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def get_buffer(self) -> bytearray:
        return self.buffers.pop() if self.buffers else bytearray(CHUNK)

    def put_buffer(self, buf: bytearray) -> None:
        if len(self.buffers) < POOL_MAX:
            self.buffers.append(buf)

    def close(self) -> None:
        for r, w in self.pipes:
            os.close(r)
            os.close(w)
        self.pipes.clear()
        self.buffers.clear()


class Traffic:
    """Byte counters of one relayed connection; the idle sweeper reads ``total``."""

    __slots__ = ("error", "total", "up")

    def __init__(self) -> None:
        self.up = 0  # client -> server
        self.total = 0  # both directions
        self.error: OSError | None = None

    @property
    def down(self) -> int:
        return self.total - self.up


class Link:
    """The two directions of one relayed connection, run as two tasks without a nursery.

    Per connection, a nursery and cancel scopes cost more than everything else trio
    does for it (they were a fifth of a worker's CPU at a connection per request). So
    the owner runs ``forward`` in its own task and spawns ``reverse`` into a
    long-lived nursery, and the two are tied together here instead:

    - ``abort()`` shuts both sockets down, which wakes whichever waits are pending
      (a shut-down socket polls readable and writable) and ends both loops: no cancel
      scope is needed for an idle timeout or for a failure on the other side;
    - a socket error in either direction aborts both, and both sockets are then set to
      close with a reset, so each peer learns that the stream broke;
    - ``on_done`` runs once, when the second direction ends; the owner closes the
      sockets there. Cancellation from the owner's nursery (the drain deadline) still
      reaches each task and ends it the same way.
    """

    __slots__ = ("_running", "aborted", "client", "on_done", "pools", "server", "traffic",
                 "use_splice")  # fmt: skip

    def __init__(
        self,
        client: socket.socket,
        server: socket.socket,
        pools: Pools,
        traffic: Traffic,
        use_splice: bool,
        on_done: Callable[[Link], None],
    ) -> None:
        self.client = client
        self.server = server
        self.pools = pools
        self.traffic = traffic
        self.use_splice = use_splice
        self.on_done = on_done
        self.aborted = False
        self._running = 2

    async def forward(self) -> None:
        """Client to server."""
        await self._run(self.client, self.server, True)

    async def reverse(self) -> None:
        """Server to client."""
        await self._run(self.server, self.client, False)

    def abort(self) -> None:
        """End both directions now (idle timeout, error on the other side)."""
        if self.aborted:
            return
        self.aborted = True
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more: its direction has ended already

    async def _run(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            if not self.aborted:
                await _direction(src, dst, self.pools, self.traffic, upstream, self.use_splice)
        except OSError as exc:
            if not self.aborted:
                self.traffic.error = exc
                _set_reset(self.client)
                _set_reset(self.server)
                self.abort()
        finally:
            self._running -= 1
            if self._running == 0:
                self.on_done(self)


async def relay(
    client: socket.socket, server: socket.socket, pools: Pools, traffic: Traffic, use_splice: bool
) -> None:
    """Relay both directions until both have ended or one fails; closes neither socket.

    The structured form of Link, for callers that can afford a nursery. After a
    failure ``traffic.error`` holds the OSError and both sockets are set to reset on
    close.
    """
    link = Link(client, server, pools, traffic, use_splice, _nothing)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.reverse)
        await link.forward()


def _nothing(link: Link) -> None:
    pass


async def _direction(
    src: socket.socket,
    dst: socket.socket,
    pools: Pools,
    traffic: Traffic,
    upstream: bool,
    use_splice: bool,
) -> None:
    if use_splice:
        try:
            await _splice(src, dst, pools, traffic, upstream)
            return
        except _SpliceUnsupported:
            pass
    await _copy(src, dst, pools, traffic, upstream)


class _SpliceUnsupported(Exception):
    """splice refused these descriptors before any byte moved."""


async def _splice(
    src: socket.socket, dst: socket.socket, pools: Pools, traffic: Traffic, upstream: bool
) -> None:
    sfd, dfd = src.fileno(), dst.fileno()
    splice = os.splice
    pipe = pools.get_pipe()
    r, w = pipe
    left = 0
    since = 0
    try:
        while True:
            try:
                n = splice(sfd, w, CHUNK, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await wait_readable(sfd)
                continue
            except OSError as exc:
                if exc.errno == errno.EINVAL and traffic.total == 0:
                    raise _SpliceUnsupported from None
                raise
            if n == 0:
                break
            left = n
            while left:
                try:
                    left -= splice(r, dfd, left, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await wait_writable(dfd)
            traffic.total += n
            if upstream:
                traffic.up += n
            if n < CHUNK:
                # A short read drained the socket: the next read would only say EAGAIN.
                since = 0
                await wait_readable(sfd)
                continue
            since += n
            if since >= CHECKPOINT_BYTES:
                since = 0
                await checkpoint()
    finally:
        pools.put_pipe(pipe, left == 0)
    _shutdown_write(dst)


async def _copy(
    src: socket.socket, dst: socket.socket, pools: Pools, traffic: Traffic, upstream: bool
) -> None:
    buf = pools.get_buffer()
    view = memoryview(buf)
    since = 0
    try:
        while True:
            try:
                n = src.recv_into(buf)
            except BlockingIOError:
                await wait_readable(src)
                continue
            if n == 0:
                break
            sent = 0
            while sent < n:
                try:
                    sent += dst.send(view[sent:n])
                except BlockingIOError:
                    await wait_writable(dst)
            traffic.total += n
            if upstream:
                traffic.up += n
            if n < CHUNK:
                # A short read drained the socket: the next read would only say EAGAIN.
                since = 0
                await wait_readable(src)
                continue
            since += n
            if since >= CHECKPOINT_BYTES:
                since = 0
                await checkpoint()
    finally:
        view.release()
        pools.put_buffer(buf)
    _shutdown_write(dst)


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the peer is already gone; the other direction will notice


def _set_reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
