"""Re-resolving ``dns:NAME:PORT`` servers, in the control process: the queries to the
nameservers (control/dns.py builds and reads them), and the assignment of the answer's
addresses to the entry's server slots in the generation's shared mapping.

Each entry has a fixed number of slots (``dns_slots``). An address that stays in the
answers keeps its slot, so its connections, counters and hash-ring place stay; an
address that leaves frees its slot (no address: out of the balancing); a new one takes
a free slot and starts up (its health check, if any, then judges it). A failed lookup
keeps the addresses there are: a resolver's hiccup must not empty a backend.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Sequence

import trio

from trilb.config.schema import Address, Backend, Config
from trilb.control.dns import (
    AAAA,
    A,
    Answer,
    DnsError,
    Truncated,
    build_query,
    parse_response,
    tcp_frame,
    tcp_unframe,
)
from trilb.control.shared import SharedState

log = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"


def system_nameservers(path: str = RESOLV_CONF) -> list[Address]:
    """The ``nameserver`` lines of resolv.conf (127.0.0.1 without any, as glibc does)."""
    found = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    try:
                        host = str(ipaddress.ip_address(words[1].partition("%")[0]))
                    except ValueError:
                        continue
                    found.append(Address(host, 53))
    except OSError:
        pass
    return found or [Address("127.0.0.1", 53)]


async def resolve(name: str, nameservers: Sequence[Address], timeout: float) -> Answer:
    """``name``'s A and AAAA records, each from the first nameserver that answers it (a
    resolver that fails AAAA questions does not lose the A records).

    Raises:
      DnsError: no nameserver answered either question (the last reason).
    """
    answers = []
    why = "no nameserver"
    for qtype in (A, AAAA):
        for server in nameservers:
            try:
                with trio.fail_after(timeout):
                    answers.append(await _ask(server, name, qtype))
                break
            except trio.TooSlowError:
                why = f"{server}: no answer within {timeout:g}s"
            except (DnsError, OSError) as exc:
                why = f"{server}: {exc}"
    found = tuple(a for answer in answers for a in answer.addresses)
    # One question unanswered: its family is unknown, so "no address" cannot be told
    # apart from a lost packet; only addresses the other one found are news.
    if not answers or (len(answers) == 1 and not found):
        raise DnsError(f"cannot resolve {name}: {why}")
    return Answer(found, min(answer.ttl for answer in answers))


async def _ask(server: Address, name: str, qtype: int) -> Answer:
    query_id = random.getrandbits(16)
    query = build_query(name, qtype, query_id)
    with trio.socket.socket(server.family, trio.socket.SOCK_DGRAM) as sock:
        await sock.connect(server.sockaddr)  # (only its answers reach this socket)
        await sock.send(query)
        data = await sock.recv(65535)
    try:
        return parse_response(data, query_id, name, qtype)
    except Truncated:
        pass
    stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        await stream.send_all(tcp_frame(query))
        buf = b""
        while (message := tcp_unframe(buf)) is None:
            more = await stream.receive_some(65535)
            if not more:
                raise DnsError(f"{server} closed the TCP connection before answering")
            buf += more
    return parse_response(message, query_id, name, qtype)


def assign(
    shared: SharedState, backend: Backend, slots: Sequence[int], port: int, found: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Put ``found`` (addresses) into ``slots`` of ``backend``; returns what changed, for
    the log, and the addresses left out for want of a free slot."""
    wanted = [Address(host, port) for host in found]
    current = {i: shared.address(backend.name, i) for i in slots}
    changes = []
    for i, address in current.items():
        if address is not None and address not in wanted:
            shared.set_address(backend.name, i, None)
            current[i] = None
            changes.append(f"{address.host} left ({backend.servers[i].name})")
    placed = set(current.values())
    free = [i for i in slots if current[i] is None]
    left_out = []
    for address in wanted:
        if address in placed:
            continue
        if not free:
            left_out.append(address.host)
            continue
        i = free.pop(0)
        shared.set_health(backend.name, i, True)  # (a new server starts up, as HAProxy's)
        shared.set_address(backend.name, i, address)
        changes.append(f"{address.host} added ({backend.servers[i].name})")
    return changes, left_out


async def keep_resolved(
    config: Config,
    backend: Backend,
    name: str,
    slots: Sequence[int],
    shared: SharedState,
    first: trio.Event | None = None,
) -> None:
    """Resolve ``name`` now, then every ``[dns] interval``, for ``slots`` of ``backend``;
    ``first`` is set once the first lookup is over."""
    dns = config.dns
    nameservers = list(dns.nameservers) or system_nameservers()
    port = backend.servers[slots[0]].address.port
    failing = ""
    left_out: list[str] = []
    while True:
        try:
            answer = await resolve(name, nameservers, dns.timeout)
        except DnsError as exc:
            if str(exc) != failing:  # (once per new reason, not once per interval)
                kept = sum(shared.address(backend.name, i) is not None for i in slots)
                log.warning("backend %s: %s; keeping its %d address(es)", backend.name, exc,
                            kept)  # fmt: skip
            failing = str(exc)
        else:
            if failing:
                log.warning("backend %s: %s resolves again", backend.name, name)
            failing = ""
            changes, out = assign(shared, backend, slots, port, answer.addresses)
            for change in changes:
                log.warning("backend %s: dns %s: %s", backend.name, name, change)
            if out and out != left_out:
                log.warning("backend %s: dns %s: %d address(es) left out, all %d slots are "
                            "taken (raise dns_slots): %s", backend.name, name, len(out),
                            len(slots), ", ".join(out))  # fmt: skip
            left_out = out
        if first is not None:
            first.set()
        await trio.sleep(dns.interval)
