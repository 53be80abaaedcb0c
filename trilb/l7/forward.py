"""What a proxy changes in the heads it forwards: hop-by-hop fields and X-Forwarded-*.

Owns RFC 9110 section 7.6.1 (fields that describe one connection, not the message) and
the forwarding fields operators expect from HAProxy and nginx (``option forwardfor``,
``proxy_set_header X-Forwarded-*``, ``Via``). Framing fields (Content-Length,
Transfer-Encoding) are removed here too: the serializer writes exactly one framing,
from the parser's decision, so nothing ambiguous is ever forwarded. Pure functions on
messages.Headers; no I/O, no parsing.
"""

from __future__ import annotations

from trilb.messages import Headers

# Fields that only describe the hop they arrived on (RFC 9110 7.6.1, RFC 9112 7.1.2),
# plus the framing fields the serializer rewrites, and proxy credentials meant for us.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
# What trilb adds to Via (RFC 9110 7.6.3): protocol version and a pseudonym, never the
# host name or address of this machine.
VIA = b"1.1 trilb"


def strip_hop_by_hop(headers: Headers, keep_upgrade: bool = False) -> None:
    """Remove hop-by-hop fields and every field the Connection header names.

    Args:
      keep_upgrade: keep ``Upgrade`` and ``Connection: upgrade`` (a WebSocket handshake
        the proxy forwards on purpose).
    """
    named: set[bytes] = set()
    for value in headers.get_all(b"connection"):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                named.add(token)
    drop = HOP_BY_HOP | named
    if keep_upgrade:
        drop = drop - {b"upgrade", b"connection"}
    headers.items = [(n, v) for n, v in headers.items if n not in drop]
    if keep_upgrade:
        headers.set(b"connection", b"upgrade")


def add_forwarded(headers: Headers, client_ip: bytes, scheme: bytes, host: bytes | None) -> None:
    """Append the client to X-Forwarded-For, set X-Forwarded-Proto/-Host, append Via."""
    earlier = headers.get_all(b"x-forwarded-for")
    if not earlier:
        headers.items.append((b"x-forwarded-for", client_ip))
    else:
        # Several fields are one comma-separated list (RFC 9110 5.3): keep every hop.
        headers.set(b"x-forwarded-for", b", ".join([*earlier, client_ip]))
    headers.set(b"x-forwarded-proto", scheme)
    if host is not None:
        headers.set(b"x-forwarded-host", host)
    else:
        headers.remove(b"x-forwarded-host")  # never pass on what the client claimed
    add_via(headers)


def add_via(headers: Headers) -> None:
    via = headers.get(b"via")
    headers.set(b"via", VIA if via is None else via + b", " + VIA)
