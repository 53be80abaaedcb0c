"""Opening a TCP connection to a backend server: the one edge where connect errors
become UpstreamError.

Owns the non-blocking connect and its timeout. Choosing the server and retrying are
the caller's (l4/tcp.py).
"""

from __future__ import annotations

import errno
import socket

import trio
from trio.lowlevel import wait_writable

from trilb.config.schema import Address
from trilb.errors import UpstreamError
from trilb.l4.idle import IdleSweeper

_KINDS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.ECONNRESET: "reset",
}


def error_kind(code: int) -> str:
    """A short name for a connect errno, for logs and UpstreamError.kind."""
    return _KINDS.get(code) or errno.errorcode.get(code, str(code))


async def open_tcp(
    address: Address, timeout: float, sweeper: IdleSweeper | None = None
) -> socket.socket:
    """Connect a non-blocking TCP socket to ``address`` within ``timeout`` seconds.

    Args:
      sweeper: when given, it enforces the timeout (no cancel scope: cheaper per
        connection, precise to one sweeper tick); otherwise a cancel scope does.

    Returns:
      The connected socket, non-blocking, with TCP_NODELAY set. The caller owns it.

    Raises:
      UpstreamError: refused, timed out or unreachable (retryable, since no byte was
        sent), or kind "local" when this process cannot open a socket (not retryable).
    """
    try:
        sock = socket.socket(address.family, socket.SOCK_STREAM)
    except OSError as exc:
        # Out of descriptors or memory: another server would not do better.
        raise UpstreamError("local", f"cannot open a socket: {exc.strerror}", False) from None
    ok = False
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address.sockaddr)
        if code == errno.EINPROGRESS:
            code = await (_wait_swept(sock, timeout, sweeper) if sweeper else _wait(sock, timeout))
            if code == errno.EINPROGRESS:
                raise UpstreamError(
                    "timeout", f"{address} did not accept within {timeout:g}s", retryable=True
                )
        if code:
            kind = error_kind(code)
            raise UpstreamError(kind, f"{address}: {kind}: {errno.errorcode.get(code)}", True)
        ok = True
        return sock
    finally:
        if not ok:
            sock.close()


async def _wait(sock: socket.socket, timeout: float) -> int:
    with trio.move_on_after(timeout):
        await wait_writable(sock)
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return errno.EINPROGRESS


async def _wait_swept(sock: socket.socket, timeout: float, sweeper: IdleSweeper) -> int:
    watch = sweeper.watch_connect(sock, timeout)
    try:
        await wait_writable(sock)
    except trio.ClosedResourceError:
        return errno.EINPROGRESS  # the sweeper's notify_closing: the deadline passed
    finally:
        sweeper.unwatch_connect(watch)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
