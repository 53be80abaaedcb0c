"""The listening sockets: one SO_REUSEPORT socket per (bind address, worker slot).

Theory of operation. The kernel spreads new connections over the sockets of a
reuseport group by hashing the 4-tuple, and each socket has its own accept queue.
When a socket of the group is closed, Linux resets the connections still queued on it
(unless net.ipv4.tcp_migrate_req=1 moves them). So the master, not the workers,
creates every socket before forking and keeps it open for the life of its slot:

- a worker that dies leaves its slot's socket open in the master; connections keep
  queueing on it and its respawned successor accepts them, nothing is reset;
- on reload the new generation inherits the very same sockets, so the old and new
  workers of a slot accept from one queue while the old one drains;
- a socket is closed only when its address leaves the config or the slot count
  shrinks, after every worker that used it has exited.

SO_REUSEPORT has a trap: a second program of the same user that also sets it joins
our group silently instead of failing. Before binding an address we do not hold yet,
we bind a probe socket without SO_REUSEPORT, which fails with EADDRINUSE when anyone
listens there. This module owns sockets only; it does not fork or serve.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable

from trilb.config.schema import Address, Config
from trilb.errors import StartupError

log = logging.getLogger(__name__)

# A listener's identity: its configured address, plus its key path when the port is 0
# (two frontends may both ask the kernel for "any port" and must not share a socket),
# and its socket type (TCP and UDP frontends may share an address: DNS does).
Bind = tuple[Address, str, int]
Key = tuple[Bind, int]  # (listener, worker slot)


class SocketSet:
    """Every listening socket the master holds, keyed by (configured address, slot)."""

    def __init__(self) -> None:
        self._socks: dict[Key, socket.socket] = {}
        # A bind to port 0 gets its port from the kernel once; every slot and every
        # later generation reuse that port.
        self._actual: dict[Bind, Address] = {}
        # The admin listener (control/admin.py serves it), one for every generation.
        self.admin: socket.socket | None = None
        self._admin_at: Address | None = None

    def ensure_admin(self, config: Config) -> None:
        """Listen on ``[admin] bind`` (a plain socket: one control process serves it),
        keeping the socket across reloads that keep the address.

        Raises:
          StartupError: the address is taken or not permitted.
        """
        want = config.admin.bind if config.admin.requested else None
        if want == self._admin_at:
            return
        sock = None
        if want is not None:
            sock = socket.socket(want.family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(want.sockaddr)
                sock.listen(64)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                raise StartupError(_bind_error("admin.bind", want, exc)) from None
            log.info("admin API listening on %s", Address(want.host, sock.getsockname()[1]))
        if self.admin is not None:
            self.admin.close()
        self.admin, self._admin_at = sock, want

    def actual(self, configured: Address, path: str = "") -> Address:
        """The address a configured bind really listens on (port 0 resolved)."""
        if configured.port == 0:
            for (addr, bind_path, _), actual in self._actual.items():
                if addr == configured and (not path or bind_path == path):
                    return actual
        return configured

    def ensure(self, config: Config, slots: int) -> None:
        """Create the sockets ``config`` needs for ``slots`` workers; all or nothing.

        Raises:
          StartupError: an address is taken or not permitted; names the config key.
        """
        created: list[Key] = []
        known = set(self._actual)
        try:
            for path, bind, backlog in _binds(config):
                for slot in range(slots):
                    sock = self._socks.get((bind, slot))
                    if sock is None:
                        self._socks[(bind, slot)] = self._listen(path, bind, backlog)
                        created.append((bind, slot))
                    elif bind[2] == socket.SOCK_STREAM:
                        sock.listen(backlog)  # a reload may change the queue length
        except BaseException:
            for key in created:
                self._socks.pop(key).close()
            for bind in set(self._actual) - known:
                del self._actual[bind]
            raise

    def _listen(self, path: str, bind: Bind, backlog: int) -> socket.socket:
        actual = self._actual.get(bind)
        kind = bind[2]
        if actual is None:
            _probe(path, bind[0], kind)
            actual = bind[0]
        try:
            sock = _reuseport_socket(actual, kind)
            if kind == socket.SOCK_STREAM:
                sock.listen(backlog)
        except OSError as exc:
            raise StartupError(_bind_error(path, actual, exc)) from None
        if bind not in self._actual:
            self._actual[bind] = Address(actual.host, sock.getsockname()[1])
            log.info("listening on %s (%s)", self._actual[bind], path.rsplit(".bind", 1)[0])
        return sock

    def for_slot(self, config: Config, slot: int) -> dict[str, list[socket.socket]]:
        """The sockets of one slot, grouped by frontend name."""
        out: dict[str, list[socket.socket]] = {}
        for fe in config.frontends.values():
            out[fe.name] = [self._socks[(bind, slot)] for _, bind, _ in _binds(config, fe.name)]
        return out

    def retire(self, keep: Iterable[tuple[Config, int]]) -> None:
        """Close sockets no live generation needs: ``keep`` is (config, slots) pairs."""
        wanted = {(bind, s) for cfg, n in keep for _, bind, _ in _binds(cfg) for s in range(n)}
        for key in [k for k in self._socks if k not in wanted]:
            bind, slot = key
            log.info("closing listener %s slot %d", self._actual.get(bind, bind[0]), slot + 1)
            self._socks.pop(key).close()
            if not any(k[0] == bind for k in self._socks):
                self._actual.pop(bind, None)

    def close_except(self, keep: Iterable[socket.socket]) -> None:
        """In a forked child: close this process's copy of every socket but ``keep``.

        A child that kept other slots' sockets would keep them alive after the master
        closes them, and connections would queue where nobody accepts.
        """
        keep_ids = {id(s) for s in keep}
        for sock in self._socks.values():
            if id(sock) not in keep_ids:
                sock.close()
        if self.admin is not None and id(self.admin) not in keep_ids:
            self.admin.close()

    def close_all(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
        if self.admin is not None:
            self.admin.close()
            self.admin = self._admin_at = None


def _binds(config: Config, frontend: str | None = None) -> Iterable[tuple[str, Bind, int]]:
    """The listeners of ``config`` (or of one frontend): (key path, identity, backlog)."""
    for fe in config.frontends.values():
        if frontend is not None and fe.name != frontend:
            continue
        kind = socket.SOCK_DGRAM if fe.mode == "udp" else socket.SOCK_STREAM
        for i, addr in enumerate(fe.binds):
            path = fe.bind_path(i)
            yield path, (addr, path if addr.port == 0 else "", kind), fe.backlog


def _reuseport_socket(addr: Address, kind: int) -> socket.socket:
    sock = socket.socket(addr.family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr.sockaddr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _probe(path: str, addr: Address, kind: int) -> None:
    if addr.port == 0:
        return
    probe = socket.socket(addr.family, kind)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if addr.family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(addr.sockaddr)
    except OSError as exc:
        raise StartupError(_bind_error(path, addr, exc)) from None
    finally:
        probe.close()


def _bind_error(path: str, addr: Address, exc: OSError) -> str:
    reason = {
        errno.EADDRINUSE: "address already in use",
        errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        errno.EADDRNOTAVAIL: "address not available on this host",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return f"{path}: cannot listen on {addr}: {reason}"
