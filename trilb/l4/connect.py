"""Opening a TCP connection to a backend server: the one edge where connect errors
become UpstreamError.

Owns the non-blocking connect and its timeout, and the client TLS handshake that may
follow it (TLS to backends, l7/upstream.py). Choosing the server and retrying are the
caller's (l4/tcp.py, l7/proxy.py).
"""

from __future__ import annotations

import errno
import socket
import ssl

import trio
from trio.lowlevel import wait_readable, wait_writable

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


async def start_tls(
    sock: socket.socket,
    context: ssl.SSLContext,
    server_hostname: str | None,
    name: str,
    timeout: float,
    sweeper: IdleSweeper,
) -> ssl.SSLSocket:
    """The client side of a TLS handshake on a connected non-blocking socket, within
    ``timeout`` seconds (``name``: the server, for messages).

    Returns:
      The TLS socket (the same descriptor; ``sock`` is detached). The caller owns it.

    Raises:
      UpstreamError: kind "tls" (the handshake failed: an untrusted or mismatched
        certificate, no common protocol) or "timeout"; retryable, no request byte was
        sent. ``sock`` is closed.
    """
    try:
        tls = context.wrap_socket(sock, server_hostname=server_hostname,
                                  do_handshake_on_connect=False)  # fmt: skip
    except (OSError, ValueError) as exc:
        sock.close()
        raise UpstreamError("tls", f"server {name}: tls setup failed: {exc}", True) from None
    watch = sweeper.watch_connect(tls, timeout)
    ok = False
    try:
        while True:
            try:
                tls.do_handshake()
                ok = True
                return tls
            except ssl.SSLWantReadError:
                wait = wait_readable
            except ssl.SSLWantWriteError:
                wait = wait_writable
            # A deadline that passed while this task was already woken (by the server's
            # bytes) woke no one: notify_closing only reaches a task that waits then.
            if watch.expired:
                raise trio.ClosedResourceError
            await wait(tls)
    except trio.ClosedResourceError:  # the sweeper's notify_closing: the deadline passed
        raise UpstreamError("timeout", f"server {name}: tls handshake did not finish within "
                            f"{timeout:g}s", True) from None  # fmt: skip
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamError("tls", f"server {name}: certificate not trusted: "
                            f"{exc.verify_message}", True) from None  # fmt: skip
    except (ssl.SSLError, OSError) as exc:
        why = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise UpstreamError("tls", f"server {name}: tls handshake failed: {why}", True) from None
    finally:
        sweeper.unwatch_connect(watch)
        if not ok:
            tls.close()


async def _wait_swept(sock: socket.socket, timeout: float, sweeper: IdleSweeper) -> int:
    watch = sweeper.watch_connect(sock, timeout)
    try:
        await wait_writable(sock)
    except trio.ClosedResourceError:
        return errno.EINPROGRESS  # the sweeper's notify_closing: the deadline passed
    finally:
        sweeper.unwatch_connect(watch)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
