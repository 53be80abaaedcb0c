"""What a proxy changes in the heads it forwards: hop-by-hop fields and X-Forwarded-*.

Owns RFC 9110 section 7.6.1 (fields that describe one connection, not the message) and
the forwarding fields operators expect from HAProxy and nginx (``option forwardfor``,
``proxy_set_header X-Forwarded-*``, ``Via``). Framing fields (Content-Length,
Transfer-Encoding) are removed here too: the serializer writes exactly one framing,
from the parser's decision, so nothing ambiguous is ever forwarded. Pure functions on
messages.Headers; no I/O, no parsing.
"""

from __future__ import annotations

from trilb.l7.h1parse import PLAIN_CONNECTION
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


_FORWARDING = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via"))
# What a forwarded request never carries as received: hop-by-hop and framing fields, the
# forwarding fields (rewritten), and Expect (trilb answers 100-continue itself).
_REQUEST_DROP = HOP_BY_HOP | _FORWARDING | {b"expect"}
_RESPONSE_DROP = HOP_BY_HOP | {b"via"}


def forward_request_fields(
    headers: Headers, client_ip: bytes, scheme: bytes, host: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The fields of a request as forwarded to a backend, framing fields excluded.

    Hop-by-hop fields (and every field Connection names, Host excepted) dropped, the
    forwarding fields rewritten, Expect removed. ``host`` is the request's Host (the
    X-Forwarded-Host value; None drops the client's claim).
    """
    kept, xff, via = _kept(headers, _REQUEST_DROP, _PROTECTED)
    kept.append((b"x-forwarded-for", client_ip if xff is None else xff + b", " + client_ip))
    kept.append((b"x-forwarded-proto", scheme))
    if host is not None:
        kept.append((b"x-forwarded-host", host))
    kept.append((b"via", VIA if via is None else via + b", " + VIA))
    return kept


def forward_response_fields(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The fields of a response as forwarded to a client, framing fields excluded:
    hop-by-hop fields (and the ones Connection names) dropped, trilb added to Via."""
    kept, _, via = _kept(headers, _RESPONSE_DROP, frozenset())
    kept.append((b"via", VIA if via is None else via + b", " + VIA))
    return kept


def _kept(
    headers: Headers, drop: frozenset[bytes], protected: frozenset[bytes]
) -> tuple[list[tuple[bytes, bytes]], bytes | None, bytes | None]:
    """One pass over the fields: those not in ``drop``, and the X-Forwarded-For and Via
    values received (joined), less every field a Connection names (``protected``
    excepted). Connection values that name nothing beyond hop-by-hop fields, the common
    case, are not split."""
    xff: bytes | None = None
    via: bytes | None = None
    kept = []
    named = False
    for item in headers.items:
        name = item[0]
        if name in drop:
            if name == b"x-forwarded-for":
                xff = item[1] if xff is None else xff + b", " + item[1]
            elif name == b"via":
                via = item[1] if via is None else via + b", " + item[1]
            elif name == b"connection" and item[1] not in PLAIN_CONNECTION:
                named = True
            continue
        kept.append(item)
    if named:
        extra = _connection_tokens(headers) - HOP_BY_HOP - protected
        if extra:
            kept = [item for item in kept if item[0] not in extra]
            if b"x-forwarded-for" in extra:
                xff = None  # the client asked for its values to be hop-by-hop
            if b"via" in extra:
                via = None
    return kept, xff, via


def _connection_tokens(headers: Headers) -> set[bytes]:
    named: set[bytes] = set()
    for value in headers.get_all(b"connection"):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                named.add(token)
    return named
