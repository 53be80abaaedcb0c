"""Running plugin phases on the HTTP path: the runners, and each route's body and
message phases (Flow), over the chains of trilb/plugin/chains.py.

A frontend without plugins has no Chains at all, so its requests never reach this
module. A plugin that raises, or returns
something that is not an action, fails its request closed: 500, logged with its name;
the worker goes on. A Reply ends the request phase: PluginReply carries it to whoever
answers (l7/proxy.py for HTTP/1.1, l7/h2stream.py for HTTP/2, l7/server.py otherwise).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from time import monotonic

from trilb.errors import TrilbError
from trilb.messages import ResponseHead
from trilb.plugin.api import (
    CONTINUE,
    DROP,
    Context,
    Replace,
    Reply,
    Request,
    Response,
    UseServer,
    WsMessage,
)
from trilb.plugin.chains import Chains, Phase

log = logging.getLogger(__name__)


class PluginReply(TrilbError):
    """A plugin answered the request itself (its Reply); or failed it (a 500 Reply)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        super().__init__(f"answered by a plugin: {reply.status}")


class Flow:
    """The body and message phases of one route: its frontend's chain and its own, in
    the order each direction meets them. Built at start, once per route that has any."""

    __slots__ = ("request_body", "request_buffer", "response_body", "response_buffer",
                 "ws_down", "ws_up")  # fmt: skip

    def __init__(self, outer: Chains | None, inner: Chains | None) -> None:
        chains = [c for c in (outer, inner) if c is not None]
        self.request_body = sum((c.request_body for c in chains), ())
        self.ws_up = sum((c.ws_up for c in chains), ())
        self.response_body = sum((c.response_body for c in reversed(chains)), ())
        self.ws_down = sum((c.ws_down for c in reversed(chains)), ())
        self.request_buffer = max((c.request_buffer for c in chains), default=0)
        self.response_buffer = max((c.response_buffer for c in chains), default=0)

    def __bool__(self) -> bool:
        return bool(self.request_body or self.response_body or self.ws_up)


def run_request(phase: Phase, ctx: Context, request: Request) -> str | None:
    """Run a request phase; returns the server a UseServer named (the last one wins).

    Raises:
      PluginReply: a plugin answered, or failed (500).
    """
    wanted = None
    for name, fn in phase:
        try:
            action = fn(ctx, request)
        except Exception:
            log.exception("plugin %s failed in on_request", name)
            raise PluginReply(Reply(500)) from None
        if action is CONTINUE:
            continue
        if isinstance(action, UseServer):
            wanted = action.name
        elif isinstance(action, Reply):
            raise PluginReply(action)
        else:
            log.error("plugin %s: on_request returned %r, not an action", name, action)
            raise PluginReply(Reply(500))
    return wanted


def run_response(phase: Phase, ctx: Context, rhead: ResponseHead) -> None:
    """Run a response phase on ``rhead`` (changed in place).

    Raises:
      PluginReply: a plugin failed (500: the response is not sent on unchecked).
    """
    ctx.status = rhead.status
    response = Response(rhead)
    for name, fn in phase:
        try:
            fn(ctx, response)
        except Exception:
            log.exception("plugin %s failed in on_response", name)
            raise PluginReply(Reply(500)) from None


def run_done(phase: Phase, ctx: Context) -> None:
    """Run the done phase; failures are logged, nothing else can happen any more."""
    for name, fn in phase:
        try:
            fn(ctx)
        except Exception:
            log.exception("plugin %s failed in on_done", name)


def run_body(phase: Phase, ctx: Context, chunk: bytes, end: bool, request: bool) -> bytes:
    """Run a body phase on one piece of a body; returns what goes on in its place.

    Raises:
      PluginReply: a request body phase answered; or a plugin failed (500).
    """
    where = "on_request_body" if request else "on_response_body"
    for name, fn in phase:
        if not chunk and not end:  # (held back by an earlier plugin: nothing to show)
            break
        try:
            action = fn(ctx, chunk, end)
        except Exception:
            log.exception("plugin %s failed in %s", name, where)
            raise PluginReply(Reply(500)) from None
        if action is CONTINUE:
            continue
        if isinstance(action, Replace) and isinstance(action.data, bytes):
            chunk = action.data
        elif isinstance(action, Reply) and request:
            raise PluginReply(action)
        else:
            log.error("plugin %s: %s returned %r, not a body action", name, where, action)
            raise PluginReply(Reply(500))
    return chunk


class MessageFailed(TrilbError):
    """A plugin failed in on_websocket_message: the WebSocket closes (1011)."""


def run_message(phase: Phase, ctx: Context, message: WsMessage) -> WsMessage | None:
    """Run the message phase; returns the message to forward, or None when dropped.

    Raises:
      MessageFailed: a plugin raised, or returned something that is not an action.
    """
    for name, fn in phase:
        try:
            action = fn(ctx, message)
        except Exception:
            log.exception("plugin %s failed in on_websocket_message", name)
            raise MessageFailed(f"plugin {name} failed") from None
        if action is CONTINUE:
            continue
        if action is DROP:
            return None
        if isinstance(action, Replace) and isinstance(action.data, (bytes, str)):
            message = WsMessage(action.data, message.from_client)
        else:
            log.error("plugin %s: on_websocket_message returned %r, not an action", name, action)
            raise MessageFailed(f"plugin {name} returned {action!r}")
    return message


class Run:
    """A request's plugin state (RequestHead.plugins): its Context, its route's chains,
    and the route's body and message phases (None if it has none)."""

    __slots__ = ("connect", "ctx", "finished", "flow", "passes_response", "responded", "route",
                 "size", "started")  # fmt: skip

    def __init__(self, ctx: Context, route: Chains | None, flow: Flow | None = None) -> None:
        self.ctx = ctx
        self.route = route
        self.flow = flow
        # The response body goes through a phase (a task's work, not the reactor's).
        self.passes_response = flow is not None and bool(flow.response_body)
        self.finished = False  # the done phases ran
        # For the access log (monotonic seconds): the request head, a new server
        # connection's connect time, the response head; the response body's length.
        self.started = monotonic()
        self.connect = 0.0
        self.responded = -1.0
        self.size = -1

    def routed(self, route: Chains | None, flow: Flow | None) -> None:
        """The router chose: the route's chains and body and message phases."""
        self.route = route
        self.flow = flow
        self.passes_response = flow is not None and bool(flow.response_body)


def reply_fields(reply: Reply) -> list[tuple[bytes, bytes]]:
    """A Reply's fields as wire bytes; a field that would break the head (CR, LF) is
    dropped, and logged."""
    out = []
    for name, value in reply.headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
            log.error("plugin reply: field %r dropped: it holds a CR, LF or colon", name)
            continue
        out.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return out


def reply_wire(reply: Reply, keep: bool) -> bytes:
    """A Reply as an HTTP/1.1 response."""
    try:
        reason = HTTPStatus(reply.status).phrase.encode()
    except ValueError:
        reason = b""
    lines = [b"HTTP/1.1 %d %s" % (reply.status, reason)]
    lines += [n + b": " + v for n, v in reply_fields(reply)]
    lines.append(b"content-length: %d" % len(reply.body))
    if not keep:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + reply.body
