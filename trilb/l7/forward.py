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
# Fields a Connection header may not name for removal (RFC 9110 7.6.1 lets a proxy
# refuse): the Host the request was routed by must reach the backend.
_PROTECTED = frozenset((b"host",))
# What trilb adds to Via (RFC 9110 7.6.3): protocol version and a pseudonym, never the
# host name or address of this machine.
VIA = b"1.1 trilb"


def strip_hop_by_hop(headers: Headers, keep_upgrade: bool = False) -> None:
    """Remove hop-by-hop fields and every field the Connection header names.

    Args:
      keep_upgrade: keep ``Upgrade`` and ``Connection: upgrade`` (a WebSocket handshake
        the proxy forwards on purpose).
    """
    items = headers.items
    drop = HOP_BY_HOP  # the common case, per message: no set built
    if any(n == b"connection" for n, _ in items):
        named: set[bytes] = set()
        for value in headers.get_all(b"connection"):
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    named.add(token)
        # A client may not make us drop what routing and the backend rely on.
        drop = HOP_BY_HOP | (named - _PROTECTED)
    if keep_upgrade:
        drop = drop - {b"upgrade", b"connection"}
    headers.items = [item for item in items if item[0] not in drop]
    if keep_upgrade:
        headers.set(b"connection", b"upgrade")


_FORWARDING = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via"))


def add_forwarded(headers: Headers, client_ip: bytes, scheme: bytes, host: bytes | None) -> None:
    """Append the client to X-Forwarded-For, set X-Forwarded-Proto/-Host, append Via.

    One pass over the fields (this runs per request): the four are taken out, then
    appended with their new values.
    """
    xff: list[bytes] = []
    via: list[bytes] = []
    kept = []
    for item in headers.items:
        name = item[0]
        if name in _FORWARDING:
            if name == b"x-forwarded-for":
                xff.append(item[1])  # several fields are one list (RFC 9110 5.3)
            elif name == b"via":
                via.append(item[1])
        else:
            kept.append(item)
    xff.append(client_ip)
    via.append(VIA)
    kept.append((b"x-forwarded-for", b", ".join(xff)))
    kept.append((b"x-forwarded-proto", scheme))
    if host is not None:  # else the client's claim is dropped, never passed on
        kept.append((b"x-forwarded-host", host))
    kept.append((b"via", b", ".join(via)))
    headers.items = kept


def add_via(headers: Headers) -> None:
    via = headers.get(b"via")
    if via is None:
        headers.items.append((b"via", VIA))
    else:
        headers.set(b"via", via + b", " + VIA)
