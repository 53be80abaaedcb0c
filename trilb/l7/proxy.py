"""One HTTP exchange: route, balance, forward the request, relay the response.

Theory of operation. For each request head the client connection hands over:

1. route (l7/router.py) to a backend, apply max_body_size (413), then rewrite the head
   for the next hop: hop-by-hop fields go, X-Forwarded-* and Via come, and exactly one
   framing field is written from the parser's decision (l7/forward.py);
2. pick servers (the balancer's order, at most ``retries`` extra) and take a pooled
   keep-alive connection or open one. A failed connect moves on to the next server;
3. send the head and relay the body in its own framing (l7/body.py). A reused pooled
   connection that turns out closed before any response byte is retried once on a
   fresh connection, but only for a request without a body whose method is
   idempotent (RFC 9110 9.2.2): a body, once sent, is not replayed;
4. read the response head within ``response_timeout``, forward it and its body, and
   give the connection back to the pool if both ends may reuse it.

``Expect: 100-continue`` is answered by trilb itself before it reads the body, as
nginx does, and not forwarded. Errors become statuses here and only here: no server
(503), connect refused or failed, backend reset or invalid response (502), response
timeout (504); a client's malformed request keeps the ProtocolError's status. Error
bodies are a short fixed text: never a traceback, never a backend address. Once a
response head has gone to the client an error can only close the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from trilb.balance.algorithms import ServerSlot
from trilb.balance.backend import BackendState
from trilb.balance.keys import key_function
from trilb.config.schema import Backend, Frontend
from trilb.errors import ExchangeAborted, ProtocolError, UpstreamError
from trilb.l4.idle import IdleSweeper
from trilb.l7.body import relay_chunked, relay_length, relay_until_close
from trilb.l7.forward import add_forwarded, add_via, strip_hop_by_hop
from trilb.l7.http1 import ResponseParser, serialize_request, serialize_response
from trilb.l7.router import Router
from trilb.l7.stream import Stream
from trilb.l7.upstream import UpstreamPool
from trilb.messages import Framing, RequestHead, ResponseHead

log = logging.getLogger(__name__)

# Methods whose request may be sent twice with the effect of once (RFC 9110 9.2.2).
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
REASONS = {
    400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
    414: b"URI Too Long", 417: b"Expectation Failed", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}  # fmt: skip


def error_response(status: int) -> bytes:
    """A complete, closing response for an error status."""
    reason = REASONS.get(status, b"Error")
    body = b"%d %s\n" % (status, reason)
    return b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n" \
        b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)  # fmt: skip


def status_for(exc: UpstreamError) -> int:
    """The status for a backend failure."""
    if exc.kind == "unavailable":
        return 503
    if exc.kind == "timeout" and not exc.retryable:
        return 504  # the response did not come in time (a connect timeout is retryable)
    return 502


class HttpBackend:
    """A backend as the L7 proxy uses it: balancer state, request key, connection pools."""

    def __init__(self, config: Backend, sweeper: IdleSweeper) -> None:
        self.config = config
        self.state = BackendState(config)
        self.key = key_function(config.balance)
        self.pool = UpstreamPool(config, self.state.slots, sweeper)
        sweeper.chores.append(self.pool.expire)

    async def connect(
        self, head: RequestHead, fresh: bool = False
    ) -> tuple[Stream, ServerSlot, bool]:
        """A connection to the best available server: (stream, its slot, reused).

        ``fresh``: open a new one, whatever the pool holds (a retry after a stale one).

        Raises:
          UpstreamError: "unavailable" when no server could be tried, else the last
            connect failure.
        """
        key = self.key(head) if self.key is not None else None
        failure: UpstreamError | None = None
        for slot in self.state.attempts(key):
            if self.pool.full(slot):
                continue
            try:
                stream, reused = await self.pool.acquire(slot, fresh)
            except UpstreamError as exc:
                log.debug("backend %s: server %s: %s", self.config.name, slot.name, exc)
                failure = exc
                continue
            return stream, slot, reused
        if failure is not None:
            raise UpstreamError("connect", f"backend {self.config.name}: no server accepted "
                                f"the connection ({failure.kind})", retryable=False)  # fmt: skip
        raise UpstreamError("unavailable", f"backend {self.config.name}: no server available",
                            retryable=False)  # fmt: skip


class Proxy:
    """The exchanges of one http frontend inside one worker."""

    def __init__(
        self,
        config: Frontend,
        backends: dict[str, HttpBackend],
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.backends = backends
        # Asked when a response head is built: a draining worker closes after it.
        self.draining = draining
        self.router = Router.compile(config.routes, config.default_backend)

    async def exchange(
        self, client: Stream, head: RequestHead, first: bytes, client_ip: bytes
    ) -> tuple[bool, bytes]:
        """Proxy one request; returns (keep the client connection, bytes that followed).

        Raises:
          ProtocolError: the request is refused (its status) or the response is invalid
            (502) before a response head went to the client.
          UpstreamError: no response head could be obtained (status_for says which).
          ExchangeAborted: the response broke off after its head went to the client.
          ClientClosed, ClientTimeout: the client went away or stalled.
        """
        backend = self.backends[self.router.match(head).backend]
        limit = self.config.max_body_size
        if limit and head.framing is Framing.LENGTH and (head.content_length or 0) > limit:
            raise ProtocolError(413, f"request body of {head.content_length} bytes over {limit}")
        wire = _request_wire(head, client_ip)
        if head.expect_continue:
            await client.send_all(CONTINUE)
            client.responding = False  # an interim response: a final error may still follow
        upstream, slot, reused = await backend.connect(head)
        replayable = head.framing is Framing.NONE and head.method in IDEMPOTENT
        held = True  # whether ``upstream`` is ours to give back
        clean = False
        try:
            try:
                rest = await self._send_request(client, upstream, head, wire, first, backend)
                rhead, body = await self._response_head(upstream, head, backend)
            except UpstreamError as exc:
                if not (reused and replayable) or exc.kind == "timeout":
                    raise
                # The server closed the pooled connection before we used it: once more,
                # on a new connection (nothing that cannot be replayed was sent).
                backend.pool.release(slot, upstream, False)
                held = False
                upstream, slot, reused = await backend.connect(head, fresh=True)
                held = True
                await upstream.send_all(wire)
                rhead, body = await self._response_head(upstream, head, backend)
            keep, clean = await self._send_response(client, upstream, head, rhead, body, backend)
        finally:
            if held:
                backend.pool.release(slot, upstream, clean)
        return keep, rest

    async def _send_request(
        self,
        client: Stream,
        upstream: Stream,
        head: RequestHead,
        wire: bytes,
        first: bytes,
        backend: HttpBackend,
    ) -> bytes:
        if head.framing is Framing.LENGTH:
            n = head.content_length or 0
            if len(first) >= n:  # the whole body came with the head: one send
                await upstream.send_all(wire + first[:n])
                return first[n:]
        elif head.framing is Framing.NONE:
            await upstream.send_all(wire)
            return first
        # A body to relay: the client must keep sending and the backend keep reading.
        client.arm(self.config.body_timeout, "body")
        upstream.arm(backend.config.response_timeout, "request body")
        await upstream.send_all(wire)
        if head.framing is Framing.LENGTH:
            rest = await relay_length(client, upstream, head.content_length or 0, first)
        else:
            limit = self.config.max_body_size
            rest = await relay_chunked(client, upstream, first, response=False, limit=limit)
        client.disarm()
        upstream.disarm()
        return rest

    async def _response_head(
        self, upstream: Stream, head: RequestHead, backend: HttpBackend
    ) -> tuple[ResponseHead, bytes]:
        parser = upstream.parser
        if parser is None:
            parser = upstream.parser = ResponseParser()
        parser.method = head.method
        upstream.arm(backend.config.response_timeout, "response")
        pending = b""
        first = True
        while True:
            if pending:
                rhead = parser.feed(pending)
            else:
                data = await (upstream.recv_later() if first else upstream.recv())
                first = False
                if not data:
                    raise UpstreamError("closed", f"server {upstream.name} closed the "
                                        "connection before answering", retryable=False)  # fmt: skip
                rhead = parser.feed(data)
            if rhead is None:
                pending = b""
            elif 100 <= rhead.status < 200 and rhead.status != 101:
                # Interim responses (103 Early Hints...) are not passed on; 100 Continue
                # never comes: trilb answers Expect itself and does not forward it.
                pending = parser.leftover
            else:
                upstream.disarm()
                return rhead, parser.leftover

    async def _send_response(
        self,
        client: Stream,
        upstream: Stream,
        head: RequestHead,
        rhead: ResponseHead,
        body: bytes,
        backend: HttpBackend,
    ) -> tuple[bool, bool]:
        """Forward the response; returns (keep the client, the backend connection is
        clean for reuse: its response ended exactly where its framing said)."""
        length = rhead.headers.get(b"content-length")
        strip_hop_by_hop(rhead.headers)
        add_via(rhead.headers)
        framing = rhead.framing
        keep = head.keep_alive and framing is not Framing.CLOSE and not self.draining()
        if framing is Framing.LENGTH or (framing is Framing.NONE and length is not None):
            rhead.headers.add(b"content-length", length or b"0")
        elif framing is Framing.CHUNKED:
            rhead.headers.add(b"transfer-encoding", b"chunked")
        if not keep:
            rhead.headers.add(b"connection", b"close")
        wire = serialize_response(rhead)
        reusable = rhead.keep_alive and framing is not Framing.CLOSE
        if framing is Framing.LENGTH:
            n = rhead.content_length or 0
            if len(body) >= n:
                await client.send_all(wire + body[:n])
                return keep, reusable and len(body) == n
        elif framing is Framing.NONE:
            await client.send_all(wire)
            return keep, reusable and not body
        await client.send_all(wire)
        # The head is out: from here a failure can only cut the response short.
        client.arm(self.config.body_timeout, "response")
        upstream.arm(backend.config.response_timeout, "response body")
        try:
            if framing is Framing.LENGTH:
                extra = await relay_length(upstream, client, rhead.content_length or 0, body)
            elif framing is Framing.CHUNKED:
                extra = await relay_chunked(upstream, client, body, response=True)
            else:
                await relay_until_close(upstream, client, body)
                extra = b""
        except (UpstreamError, ProtocolError) as exc:
            raise ExchangeAborted(str(exc)) from exc
        client.disarm()
        upstream.disarm()
        return keep, reusable and not extra


def _request_wire(head: RequestHead, client_ip: bytes) -> bytes:
    headers = head.headers
    host = headers.get(b"host")
    strip_hop_by_hop(headers)
    headers.remove(b"expect")  # answered here (100 Continue), not by the backend
    head.version = b"1.1"  # trilb speaks HTTP/1.1 to backends, whatever the client spoke
    add_forwarded(headers, client_ip, b"http", host)
    if head.framing is Framing.LENGTH:
        headers.add(b"content-length", b"%d" % (head.content_length or 0))
    elif head.framing is Framing.CHUNKED:
        headers.add(b"transfer-encoding", b"chunked")
    return serialize_request(head)
