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
4. read the response head within ``response_timeout`` (interim 1xx heads are passed on
   to HTTP/1.1 clients), forward it and its body, and give the connection back to the
   pool if both ends may reuse it.

The common exchange (no request body, an idle pooled connection, a response that comes
whole) is sequenced from the worker's reactor by l7/client.py with the synchronous
pieces here (``prepare``, ``HttpBackend.pooled``, ``response_wire``); everything else
runs as the async steps below (``exchange``, ``respond``) in a task. A head with nothing
to drop but a plain Connection is forwarded as received (``RequestHead.raw``,
``ResponseHead.raw``) with trilb's fields appended.

``Expect: 100-continue`` is answered by trilb itself before it reads the body, as
nginx does, and not forwarded. Errors become statuses here and only here: no server
(503), connect refused or failed, backend reset or invalid response (502), response
timeout (504); a client's malformed request keeps the ProtocolError's status. Error
bodies are a short fixed text: never a traceback, never a backend address. Once a
response head has gone to the client an error can only close the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from time import monotonic

import trio

from trilb.balance.algorithms import ServerSlot
from trilb.balance.backend import BackendState
from trilb.balance.keys import key_function
from trilb.config.schema import Backend, Frontend
from trilb.errors import ExchangeAborted, ProtocolError, UpstreamError
from trilb.l4.idle import IdleSweeper
from trilb.l7.body import relay_chunked, relay_length, relay_until_close
from trilb.l7.bodyphase import BodyPass
from trilb.l7.forward import VIA, forward_request_fields, forward_response_fields
from trilb.l7.h1toh2 import exchange_h2
from trilb.l7.h2upstream import Exchange, Fields, H2Pool
from trilb.l7.http1 import serialize_request, serialize_response, without_connection
from trilb.l7.phases import (
    Flow,
    PluginReply,
    Run,
    reply_wire,
    run_done,
    run_request,
    run_response,
)
from trilb.l7.router import Router
from trilb.l7.stream import Peer, Stream
from trilb.l7.upstream import UpstreamPool
from trilb.l7.wshandshake import UPGRADE_FIELDS
from trilb.messages import Framing, RequestHead, ResponseHead
from trilb.obs.accesslog import AccessLog, HttpRecord, http_line
from trilb.obs.counters import F_1XX, frontend_counts
from trilb.plugin.api import Context, Plugin, Reply, Request
from trilb.plugin.chains import build

log = logging.getLogger(__name__)

# Methods whose request may be sent twice with the effect of once (RFC 9110 9.2.2).
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The end of a response head forwarded as received (ResponseHead.raw).
VIA_END = b"via: " + VIA + b"\r\n\r\n"
VIA_CLOSE_END = b"via: " + VIA + b"\r\nconnection: close\r\n\r\n"
REASONS = {
    400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
    414: b"URI Too Long", 417: b"Expectation Failed", 426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}  # fmt: skip


# Fields an error status must carry: 426 names what to upgrade to (RFC 9110 15.5.22),
# here the one WebSocket version trilb relays (RFC 6455 4.2.2).
_ERROR_FIELDS = {426: b"upgrade: websocket\r\nsec-websocket-version: 13\r\n"}
# RFC 9110 7.8: Upgrade is listed in Connection wherever it is sent.
_CLOSE = {426: b"upgrade, close"}


def error_response(status: int) -> bytes:
    """A complete, closing response for an error status."""
    reason = REASONS.get(status, b"Error")
    body = b"%d %s\n" % (status, reason)
    return b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s" \
        b"connection: %s\r\n\r\n%s" % (status, reason, len(body), _ERROR_FIELDS.get(status, b""),
                                      _CLOSE.get(status, b"close"), body)  # fmt: skip


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
        sweeper.chores.append(self.state.restore)  # (ejections that are over)
        # protocol = "h2": multiplexed HTTP/2 connections instead of the HTTP/1.1 pool.
        self.h2: H2Pool | None = None
        if config.protocol == "h2":
            self.h2 = H2Pool(config, self.state.slots, sweeper)
            sweeper.chores.append(self.h2.expire)
        self.state.moved = self._moved
        if config.eject_on_5xx and config.eject_after:  # each final status, to the state
            self.pool.observe = self._observed
            if self.h2 is not None:
                self.h2.observe = self._observed

    def _moved(self, slot: ServerSlot) -> None:
        """A dns: slot has a new address: its connections to the old one go."""
        self.pool.moved(slot)
        if self.h2 is not None:
            self.h2.moved(slot)

    def _observed(self, slot: ServerSlot, status: int) -> None:
        self.state.observed(slot, status, trio.current_time())

    def pooled(
        self, head: RequestHead, pinned: ServerSlot | None = None
    ) -> tuple[Stream | None, ServerSlot | None]:
        """The balancer's pick for ``head`` (or ``pinned``, a plugin's) and, when its pool
        holds a usable one, an idle connection to it: the per-request path, with nothing
        to await. Pass the slot to ``connect`` when no connection came with it."""
        if pinned is not None:
            slot: ServerSlot | None = pinned
        else:
            key = self.key(head) if self.key is not None else None
            slot = self.state.balancer.pick(key)
        if slot is None or self.h2 is not None:
            return None, slot
        return self.pool.take(slot), slot

    async def connect(
        self, head: RequestHead, first: ServerSlot | None, fresh: bool = False
    ) -> tuple[Stream, ServerSlot, bool]:
        """A connection to the best available server: (stream, its slot, reused).

        ``first``: the server ``pooled`` picked (tried first, without a new pick), or
        None for a new pick. ``fresh``: open a new connection whatever the pool holds
        (a retry after a stale one). At most ``retries`` servers after the first.

        Raises:
          UpstreamError: "unavailable" when no server could be tried, else the last
            connect failure.
        """
        key = self.key(head) if self.key is not None else None
        pick = self.state.balancer.pick
        pool = self.pool
        tried: set[int] = set()
        failure: UpstreamError | None = None
        slot = first
        for _ in range(self.config.retries + 1):
            if slot is None:
                slot = pick(key, tried)
                if slot is None:
                    break
            tried.add(slot.index)
            if not fresh and (stream := pool.take(slot)) is not None:
                return stream, slot, True
            if not pool.full(slot):
                started = monotonic()
                try:
                    stream = await pool.open(slot)
                except UpstreamError as exc:
                    log.debug("backend %s: server %s: %s", self.config.name, slot.name, exc)
                    self.state.failed(slot, trio.current_time(), exc.kind)
                    failure = exc
                else:
                    self.state.succeeded(slot)
                    if head.plugins is not None:  # (for the access log)
                        head.plugins.connect = monotonic() - started
                    return stream, slot, False
            slot = None
        raise self._no_server(failure)

    async def open_h2(self, head: RequestHead, fields: Fields, end_stream: bool) -> Exchange:
        """A stream to the best available server of an HTTP/2 backend; a failed connect
        moves on to the next server, as ``connect`` does (at most ``retries`` more).

        Raises:
          UpstreamError: as ``connect``.
        """
        assert self.h2 is not None
        key = self.key(head) if self.key is not None else None
        tried: set[int] = set()
        failure: UpstreamError | None = None
        for _ in range(self.config.retries + 1):
            slot = self.state.balancer.pick(key, tried)
            if slot is None:
                break
            tried.add(slot.index)
            try:
                exchange = await self.h2.open(slot, fields, end_stream)
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                log.debug("backend %s: server %s: %s", self.config.name, slot.name, exc)
                self.state.failed(slot, trio.current_time(), exc.kind)
                failure = exc
            else:
                self.state.succeeded(slot)
                return exchange
        raise self._no_server(failure)

    def _no_server(self, failure: UpstreamError | None) -> UpstreamError:
        if failure is not None:
            return UpstreamError("connect", f"backend {self.config.name}: no server accepted "
                                 f"the connection (last: {failure})", retryable=False)  # fmt: skip
        return UpstreamError("unavailable", f"backend {self.config.name}: no server available",
                             retryable=False)  # fmt: skip


class Proxy:
    """The exchanges of one http frontend inside one worker."""

    def __init__(
        self,
        config: Frontend,
        backends: dict[str, HttpBackend],
        plugins: Mapping[str, Plugin] | None = None,
    ) -> None:
        self.config = config
        self.backends = backends
        # Plugin phases (l7/phases.py): the frontend's, and each route's that lists some.
        # Without any, requests never leave the paths below for the plugin one.
        instances = plugins or {}
        self.chains = build(config.plugins, instances)
        self.route_chains = {r.index: c for r in config.routes
                             if (c := build(r.plugins, instances)) is not None}  # fmt: skip
        self.has_plugins = self.chains is not None or bool(self.route_chains)
        # The body and message phases per route index (-1: the default route), where any.
        self.flows = {i: f for i in [-1, *(r.index for r in config.routes)]
                      if (f := Flow(self.chains, self.route_chains.get(i)))}  # fmt: skip
        # Set by the frontend's drain: each response then closes its connection.
        self.draining = False
        # The frontend's counters (obs/counters.py; the frontend shares its own).
        self.counts = frontend_counts()
        # The worker's access log, if any: every request then takes the plugin path,
        # whose Run carries what the line needs.
        self.access: AccessLog | None = None
        self.router = Router.compile(config.routes, config.default_backend)
        # Without routes every request goes to the default backend: no match to run.
        self.only = None if config.routes else backends.get(config.default_backend)
        # X-Forwarded-Proto: what the client spoke to us.
        self.scheme = b"https" if config.tls is not None else b"http"
        self.scheme_name = self.scheme.decode()  # (the plugins' Context.scheme)

    def set_access_log(self, access: AccessLog) -> None:
        self.access = access
        self.has_plugins = True

    def count(self, status: int) -> None:
        """A response of ``status`` went to a client."""
        self.counts[F_1XX - 1 + status // 100] += 1

    def prepare(self, head: RequestHead, client_ip: bytes) -> tuple[HttpBackend, bytes]:
        """Route ``head`` and build what goes to the backend: (its backend, the head's
        wire form). Nothing is sent.

        Raises:
          ProtocolError: 413 for a declared body over ``max_body_size``; 500 when a field
            cannot be written.
        """
        backend = self.route(head)
        return backend, self.request_wire(head, client_ip)

    def route(self, head: RequestHead) -> HttpBackend:
        """The backend ``head`` goes to.

        Raises:
          ProtocolError: 413 for a declared body over ``max_body_size``.
        """
        backend = self.only or self.backends[self.router.match(head).backend]
        self._check_size(head)
        return backend

    def _check_size(self, head: RequestHead) -> None:
        if head.framing is Framing.LENGTH:
            limit = self.config.max_body_size
            if limit and (head.content_length or 0) > limit:
                raise ProtocolError(413, f"request body of {head.content_length} bytes "
                                    f"over {limit}")  # fmt: skip

    # --- plugins ---------------------------------------------------------------------

    def needs_plugins(self, head: RequestHead) -> bool:
        """Whether a plugin phase applies to ``head`` (call only when ``has_plugins``): the
        frontend's plugins, or its route's. A request whose route has none stays on the
        paths without plugins."""
        return (self.chains is not None or self.access is not None
                or self.router.match(head).index in self.route_chains)  # fmt: skip

    def wants_messages(self, head: RequestHead) -> bool:
        """Whether the WebSocket ``head`` asks for is relayed message by message: for
        a ``max_message_size``, or for a message phase on its route."""
        if self.config.websocket.messages:
            return True
        if not self.flows:
            return False
        if head.plugins is not None:  # (the request phases ran: their route stands)
            flow = head.plugins.flow
        else:
            flow = self.flows.get(self.router.match(head).index)
        return flow is not None and bool(flow.ws_up)

    def before(self, head: RequestHead, client_ip: bytes) -> tuple[HttpBackend, ServerSlot | None]:
        """The request phases around routing: the frontend's plugins, the router, the
        route's plugins. Returns the backend and the server a plugin pinned (if it is
        available: else None, and the balancer picks).

        Raises:
          PluginReply: a plugin answered (or failed: 500).
          ProtocolError: 413, as ``route``.
        """
        ctx = Context(client_ip.decode("latin-1"), self.scheme_name, self.config.name)
        request = Request(head)
        # (Made first: a frontend plugin's Reply still gets its done phases and log line.)
        run = head.plugins = Run(ctx, None)
        wanted = run_request(self.chains.request, ctx, request) if self.chains else None
        route = self.router.match(head)
        ctx.backend = route.backend
        chains = self.route_chains.get(route.index)
        run.routed(chains, self.flows.get(route.index))
        if chains is not None:
            wanted = run_request(chains.request, ctx, request) or wanted
        backend = self.backends[route.backend]
        self._check_size(head)
        slot = None
        if wanted is not None:
            slot = next((s for s in backend.state.slots if s.name == wanted and s.up
                         and s.weight > 0), None)  # fmt: skip
            ctx.pinned_missed = slot is None
        return backend, slot

    def after(self, head: RequestHead, rhead: ResponseHead) -> None:
        """The response phases: the route's plugins, then the frontend's.

        Raises:
          PluginReply: a plugin failed (500).
        """
        run = head.plugins
        run.responded = monotonic()
        run.ctx.status = rhead.status
        framing = rhead.framing  # (a streamed body's length is not known: -1)
        run.size = (rhead.content_length or 0 if framing is Framing.LENGTH
                    else 0 if framing is Framing.NONE else -1)  # fmt: skip
        if run.route is not None:
            run_response(run.route.response, run.ctx, rhead)
        if self.chains is not None:
            run_response(self.chains.response, run.ctx, rhead)

    def done(self, head: RequestHead, status: int = 0) -> None:
        """The done phases (``status``: the one trilb answered, if not the backend's);
        once per request, whichever path ends it first."""
        run = head.plugins
        if run is None or run.finished:
            return
        run.finished = True
        if status:
            run.ctx.status = status
        if self.chains is not None:
            run_done(self.chains.done, run.ctx)
        if run.route is not None:
            run_done(run.route.done, run.ctx)
        if self.access is not None:
            self._log(head, run)

    def log_unparsed(self, client_ip: bytes, status: int, notes: str = "") -> None:
        """The access log line of a request refused before its head was whole (a
        malformed one, a header timeout, an HTTP/2 connection error): HAProxy's
        <BADREQ>."""
        assert self.access is not None
        record = HttpRecord(self.config.name, client_ip.decode("latin-1"), "-", "<BADREQ>",
                            "-", status, "", "", 0.0, -1.0, 0.0, -1, notes)  # fmt: skip
        self.access.add(http_line(record, time.time(), self.access.json))

    def _log(self, head: RequestHead, run: Run) -> None:
        ctx = run.ctx
        now = monotonic()
        record = HttpRecord(
            self.config.name, ctx.client_ip, head.method.decode("latin-1"),
            head.target.decode("latin-1"), head.version.decode("latin-1"), ctx.status,
            ctx.backend, ctx.server or "", run.connect,
            run.responded - run.started if run.responded >= 0 else -1.0,
            now - run.started, run.size if run.responded >= 0 else -1,
            " ".join(f"{k}={v}" for k, v in ctx.notes.items()),
        )  # fmt: skip
        assert self.access is not None
        self.access.add(http_line(record, time.time(), self.access.json))

    async def _exchange_plugins(
        self,
        client: Stream,
        head: RequestHead,
        first: bytes,
        client_ip: bytes,
        slot: ServerSlot | None,
        fresh: bool,
    ) -> tuple[bool, bytes]:
        """``exchange`` with plugin phases around it."""
        status = 0
        try:
            if head.plugins is None:
                try:
                    backend, slot = self.before(head, client_ip)
                except PluginReply as reply:
                    return await self._reply(client, head, first, reply.reply)
            else:  # (the phases ran in the reactor already: ``slot`` is its pick)
                backend = self.backends[head.plugins.ctx.backend]
            try:
                upstream, slot, backend, rest, rhead, body = await self.forward(
                    client, head, first, client_ip, slot, fresh, backend
                )
            except PluginReply as reply:  # (a request body phase answered)
                return await self._reply(client, head, b"", reply.reply)
            return await self.respond(client, upstream, slot, backend, head, rest, rhead, body)
        except PluginReply as reply:  # (a response phase failed: 500 if it still can)
            status = reply.reply.status
            raise ProtocolError(status, "a plugin failed in on_response") from None
        except ProtocolError as exc:
            status = exc.status
            raise
        except UpstreamError as exc:
            status = status_for(exc)
            raise
        finally:
            self.done(head, status)

    async def _reply(
        self, client: Stream, head: RequestHead, first: bytes, reply: Reply
    ) -> tuple[bool, bytes]:
        """Send a plugin's Reply; the connection stays open if the request had no body
        (one a body phase answered may not have been read to its end)."""
        head.plugins.ctx.status = reply.status
        keep = head.keep_alive and head.framing is Framing.NONE and not self.draining
        self.count(reply.status)
        await client.send_all(reply_wire(reply, keep))
        return keep, first if keep else b""

    async def exchange(
        self,
        client: Stream,
        head: RequestHead,
        first: bytes,
        client_ip: bytes,
        slot: ServerSlot | None = None,
        fresh: bool = False,
    ) -> tuple[bool, bytes]:
        """Proxy one request; returns (keep the client connection, bytes that followed).

        ``slot``: the server the balancer already picked for this request (tried first);
        ``fresh``: do not reuse a pooled connection (the request failed on one already).

        Raises:
          ProtocolError: the request is refused (its status) or the response is invalid
            (502) before a response head went to the client.
          UpstreamError: no response head could be obtained (status_for says which).
          ExchangeAborted: the response broke off after its head went to the client.
          ClientClosed, ClientTimeout: the client went away or stalled.
        """
        if self.has_plugins and self.needs_plugins(head):
            return await self._exchange_plugins(client, head, first, client_ip, slot, fresh)
        routed = self.route(head)
        if routed.h2 is not None:
            return await exchange_h2(self, client, head, first, client_ip, routed)
        upstream, slot, backend, rest, rhead, body = await self.forward(
            client, head, first, client_ip, slot, fresh
        )
        return await self.respond(client, upstream, slot, backend, head, rest, rhead, body)

    async def forward(
        self,
        client: Peer,
        head: RequestHead,
        first: bytes,
        client_ip: bytes,
        slot: ServerSlot | None = None,
        fresh: bool = False,
        routed: HttpBackend | None = None,
    ) -> tuple[Stream, ServerSlot, HttpBackend, bytes, ResponseHead, bytes]:
        """The request half of ``exchange``: route, connect, send the head and body, read
        the final response head (retrying where that is safe). Returns the backend
        connection (the caller relays the body and releases it), its slot and backend,
        what followed the request body, the response head and the bytes after it.

        ``client`` is where the request body comes from: the client connection, or an
        HTTP/2 stream (l7/http2.py) that reads like one. ``routed``: the backend the
        plugin phases routed to (they ran: ``before``). With plugins and no ``routed``,
        the phases run here (WebSocket and HTTP/2 requests), and may raise PluginReply.
        Raises as ``exchange`` does.
        """
        if routed is None and self.has_plugins and self.needs_plugins(head):
            if head.plugins is None:
                routed, pinned = self.before(head, client_ip)
                slot = slot or pinned
            else:  # (they ran already)
                routed = self.backends[head.plugins.ctx.backend]
        passing = None
        if head.plugins is not None and head.framing is not Framing.NONE:
            flow = head.plugins.flow
            if flow is not None and flow.request_body:
                passing, first = await self._body_pass(client, head, first, flow), b""
        if routed is not None:
            backend, wire = routed, self.request_wire(head, client_ip)
        else:
            backend, wire = self.prepare(head, client_ip)
        if backend.h2 is not None:  # (exchange and l7/h2stream.py take other paths there)
            if head.upgrade:  # RFC 8441 towards a backend: not implemented
                raise ProtocolError(501, f"websocket to backend {backend.config.name}, which "
                                    'has protocol = "h2"')  # fmt: skip
            raise ProtocolError(500, f"backend {backend.config.name} speaks h2")
        if head.expect_continue and passing is None:
            await client.send_all(CONTINUE)
            client.responding = False  # an interim response: a final error may still follow
        upstream, slot, reused = await backend.connect(head, slot, fresh)
        replayable = head.framing is Framing.NONE and head.method in IDEMPOTENT
        try:
            if passing is not None:
                rest = await self._send_passed(client, upstream, head, wire, passing[0],
                                               passing[1], backend)  # fmt: skip
            elif head.framing is Framing.NONE:
                await upstream.send_all(wire)
                rest = first
            else:
                rest = await self._send_body(client, upstream, head, wire, first, backend)
            rhead, body = await self.read_response_head(upstream, head, backend, b"", client)
        except UpstreamError as exc:
            backend.pool.release(slot, upstream, False)
            if not (reused and replayable) or exc.kind == "timeout":
                raise
            # The server closed the pooled connection before we used it: once more, on a
            # new connection (nothing that cannot be replayed was sent).
            upstream, slot, reused = await backend.connect(head, None, fresh=True)
            try:
                await upstream.send_all(wire)
                rhead, body = await self.read_response_head(upstream, head, backend, b"", client)
            except BaseException:
                backend.pool.release(slot, upstream, False)
                raise
        except BaseException:
            backend.pool.release(slot, upstream, False)
            raise
        if head.plugins is not None:
            head.plugins.ctx.server = slot.name  # (what answered: sticky cookies name it)
        return upstream, slot, backend, rest, rhead, body

    async def respond(
        self,
        client: Stream,
        upstream: Stream,
        slot: ServerSlot,
        backend: HttpBackend,
        head: RequestHead,
        rest: bytes,
        rhead: ResponseHead | None,
        body: bytes,
        interim: ResponseHead | None = None,
    ) -> tuple[bool, bytes]:
        """Relay the response to a request already sent on ``upstream``, then give the
        connection back; returns what ``exchange`` returns.

        ``rhead``: its head when already read (``body``: the bytes after it), or None
        to read it first (``body``: bytes already received from the backend).
        ``interim``: an interim response already read, to pass on first.
        """
        clean = False
        try:
            if interim is not None:
                await self._interim(client, head, interim)
            if rhead is None:
                rhead, body = await self.read_response_head(upstream, head, backend, body, client)
            keep, clean = await self._send_response(client, upstream, head, rhead, body, backend)
        finally:
            backend.pool.release(slot, upstream, clean)
        if head.plugins is not None:
            self.done(head)
        return keep, rest

    def request_wire(self, head: RequestHead, client_ip: bytes) -> bytes:
        """``head`` as it goes to an HTTP/1.1 backend, forwarding fields in.

        Raises:
          ProtocolError: 500 when a field cannot be written.
        """
        headers = head.headers
        if head.raw:  # forwarded as received, Connection out, the forwarding fields in
            host = headers.get(b"host")
            return b"".join((head.raw, b"x-forwarded-for: ", client_ip, b"\r\nx-forwarded-proto: ",
                             self.scheme, b"\r\n" if host is None else
                             b"\r\nx-forwarded-host: " + host + b"\r\n", VIA_END))  # fmt: skip
        fields = forward_request_fields(headers, client_ip, self.scheme, headers.get(b"host"))
        if head.upgrade == b"websocket":  # (l7/websocket.py checked the handshake)
            fields.extend(UPGRADE_FIELDS)
        if head.framing is Framing.LENGTH:
            fields.append((b"content-length", b"%d" % (head.content_length or 0)))
        elif head.framing is Framing.CHUNKED:
            fields.append((b"transfer-encoding", b"chunked"))
        # trilb speaks HTTP/1.1 to backends, whatever the client spoke.
        return serialize_request(head, fields, b"1.1")

    async def _interim(self, client: Peer, head: RequestHead, rhead: ResponseHead) -> None:
        """Pass an interim response on (103 Early Hints...), as RFC 9110 15.2 asks of a
        proxy, except to an HTTP/1.0 client (which knows none) and except 100 Continue:
        trilb answers Expect itself and does not forward it."""
        if rhead.status == 100 or head.version != b"1.1":
            return
        fields = forward_response_fields(rhead.headers)
        await client.send_all(serialize_response(rhead, fields, b"1.1"))
        client.responding = False  # interim: a final error status may still follow

    def response_wire(self, head: RequestHead, rhead: ResponseHead) -> tuple[bytes, bool]:
        """The response head as forwarded to the client, and whether the client
        connection stays open after this response."""
        self.counts[F_1XX - 1 + rhead.status // 100] += 1
        framing = rhead.framing
        # A body that ends when the backend closes goes to an HTTP/1.1 client chunked:
        # its end is then marked, and the client connection can stay open.
        rechunk = framing is Framing.CLOSE and head.version == b"1.1"
        # And a chunked body goes to an HTTP/1.0 client as plain bytes ended by the close.
        dechunk = framing is Framing.CHUNKED and head.version != b"1.1"
        keep = head.keep_alive and not dechunk and (rechunk or framing is not Framing.CLOSE)
        # A 101 (no upgrade was forwarded, so a broken backend) ends HTTP on the connection.
        keep = keep and rhead.status != 101 and not self.draining
        if rhead.raw and not rechunk and not dechunk:  # forwarded as received, Via in
            if keep:
                return rhead.raw + VIA_END, keep
            raw = without_connection(rhead.raw) if rhead.keep_alive_line else rhead.raw
            return raw + VIA_CLOSE_END, keep
        fields = forward_response_fields(rhead.headers)
        if (framing is Framing.CHUNKED and not dechunk) or rechunk:
            fields.append((b"transfer-encoding", b"chunked"))
        elif rhead.content_length is not None:  # a body's, or a HEAD or 304's: passed on
            fields.append((b"content-length", b"%d" % rhead.content_length))
        if not keep:
            fields.append((b"connection", b"close"))
        return serialize_response(rhead, fields, b"1.1"), keep

    async def _send_body(
        self,
        client: Peer,
        upstream: Stream,
        head: RequestHead,
        wire: bytes,
        first: bytes,
        backend: HttpBackend,
    ) -> bytes:
        """Send the head and relay the request body; returns what followed the body."""
        if head.framing is Framing.LENGTH:
            n = head.content_length or 0
            if len(first) >= n:  # the whole body came with the head: one send
                await upstream.send_all(wire + first[:n])
                return first[n:]
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

    async def _body_pass(
        self, client: Peer, head: RequestHead, first: bytes, flow: Flow
    ) -> tuple[BodyPass, bytes]:
        """The request body's first piece through its phases, before any backend is
        asked: (the pass, what goes on in its place). ``head`` then declares the body's
        forwarded framing.

        Raises:
          PluginReply: a phase answered (or failed).
          ProtocolError: the body is truncated, badly framed or too big.
        """
        assert head.plugins is not None
        if head.expect_continue:  # (the body is read now: the client must send it)
            await client.send_all(CONTINUE)
            client.responding = False
        limit = self.config.max_body_size if head.framing is Framing.CHUNKED else 0
        passing = BodyPass(flow.request_body, head.plugins.ctx, flow.request_buffer,
                           head.framing, head.content_length, True, limit)  # fmt: skip
        client.arm(self.config.body_timeout, "body")
        out = await passing.start(client, first)
        client.disarm()
        passing.adapt(head)
        return passing, out

    async def _send_passed(
        self,
        client: Peer,
        upstream: Stream,
        head: RequestHead,
        wire: bytes,
        passing: BodyPass,
        out: bytes,
        backend: HttpBackend,
    ) -> bytes:
        """Send the head, the first piece the phases made, and pass the rest of the body
        through them; returns what followed the body."""
        chunked = head.framing is Framing.CHUNKED
        if passing.ended:
            await upstream.send_all(wire + passing.frame(out, chunked))
            return passing.leftover
        client.arm(self.config.body_timeout, "body")
        upstream.arm(backend.config.response_timeout, "request body")
        await upstream.send_all(wire + passing.frame(out, chunked))
        await passing.pump(client, upstream, chunked)
        client.disarm()
        upstream.disarm()
        return passing.leftover

    async def read_response_head(
        self,
        upstream: Stream,
        head: RequestHead,
        backend: HttpBackend,
        pending: bytes = b"",
        client: Peer | None = None,
    ) -> tuple[ResponseHead, bytes]:
        """Read the final response head (``pending``: bytes of it already received);
        interim responses before it go to ``client``."""
        parser = upstream.parser
        assert parser is not None, "the pool gives every backend connection a parser"
        parser.expect(head.method)
        upstream.arm(backend.config.response_timeout, "response")
        data = pending or await upstream.recv_later()
        while True:
            if not data:
                raise UpstreamError("closed", f"server {upstream.name} closed the "
                                    "connection before answering", retryable=False)  # fmt: skip
            rhead = parser.feed(data)
            if rhead is not None:
                if rhead.status >= 200 or rhead.status == 101:
                    upstream.disarm()
                    return rhead, parser.leftover
                if client is not None:
                    await self._interim(client, head, rhead)
                data = parser.leftover
                if data:
                    continue
            data = await upstream.recv()

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
        if head.plugins is not None:
            self.after(head, rhead)
            flow = head.plugins.flow
            if flow is not None and flow.response_body and rhead.framing is not Framing.NONE:
                return await self._send_passed_response(client, upstream, head, rhead, body,
                                                        backend, flow)  # fmt: skip
        framing = rhead.framing
        length = rhead.content_length
        wire, keep = self.response_wire(head, rhead)
        reusable = rhead.keep_alive and framing is not Framing.CLOSE
        if framing is Framing.LENGTH:
            n = length or 0
            if len(body) >= n:
                data = wire + body[:n]
                sent = client.send_nowait(data)
                if sent < len(data):
                    await client.send_rest(data, sent)
                return keep, reusable and len(body) == n
        elif framing is Framing.NONE:
            sent = client.send_nowait(wire)
            if sent < len(wire):
                await client.send_rest(wire, sent)
            return keep, reusable and not body
        await client.send_all(wire)
        # The head is out: from here a failure can only cut the response short.
        client.arm(self.config.body_timeout, "response")
        upstream.arm(backend.config.response_timeout, "response body")
        try:
            if framing is Framing.LENGTH:
                extra = await relay_length(upstream, client, length or 0, body)
            elif framing is Framing.CHUNKED:
                dechunk = head.version != b"1.1"
                extra = await relay_chunked(upstream, client, body, True, dechunk=dechunk)
            else:
                await relay_until_close(upstream, client, body, chunked=head.version == b"1.1")
                extra = b""
        except (UpstreamError, ProtocolError) as exc:
            raise ExchangeAborted(str(exc)) from exc
        client.disarm()
        upstream.disarm()
        return keep, reusable and not extra

    async def _send_passed_response(
        self,
        client: Stream,
        upstream: Stream,
        head: RequestHead,
        rhead: ResponseHead,
        body: bytes,
        backend: HttpBackend,
        flow: Flow,
    ) -> tuple[bool, bool]:
        """``_send_response`` for a body that goes through response body phases."""
        assert head.plugins is not None
        reusable = rhead.keep_alive and rhead.framing is not Framing.CLOSE
        passing = BodyPass(flow.response_body, head.plugins.ctx, flow.response_buffer,
                           rhead.framing, rhead.content_length, request=False)  # fmt: skip
        upstream.arm(backend.config.response_timeout, "response body")
        out = await passing.start(upstream, body)  # (PluginReply, ProtocolError: nothing sent)
        passing.adapt(rhead)
        wire, keep = self.response_wire(head, rhead)
        # What the client gets chunked: a chunked body for an HTTP/1.1 client, and a
        # close-delimited one too (response_wire said so).
        chunked = head.version == b"1.1" and rhead.framing in (Framing.CHUNKED, Framing.CLOSE)
        await client.send_all(wire + passing.frame(out, chunked))
        if not passing.ended:
            client.arm(self.config.body_timeout, "response")
            try:
                await passing.pump(upstream, client, chunked)
            except (UpstreamError, ProtocolError, PluginReply) as exc:
                raise ExchangeAborted(str(exc)) from exc
            client.disarm()
        upstream.disarm()
        return keep, reusable and not passing.leftover
