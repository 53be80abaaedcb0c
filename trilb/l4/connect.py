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

_KINDS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.ECONNRESET: "reset",
}


async def open_tcp(address: Address, timeout: float) -> socket.socket:
    """Connect a non-blocking TCP socket to ``address`` within ``timeout`` seconds.

    Returns:
      The connected socket, non-blocking, with TCP_NODELAY set. The caller owns it.

    Raises:
      UpstreamError: refused, timed out or unreachable; always retryable, since no
        byte was sent.
    """
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    ok = False
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address.sockaddr)
        if code == errno.EINPROGRESS:
            with trio.move_on_after(timeout):
                await wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == errno.EINPROGRESS:
                raise UpstreamError(
                    "timeout", f"{address} did not accept within {timeout:g}s", retryable=True
                )
        if code:
            kind = _KINDS.get(code, "error")
            raise UpstreamError(kind, f"{address}: {kind}: {errno.errorcode.get(code)}", True)
        ok = True
        return sock
    finally:
        if not ok:
            sock.close()
