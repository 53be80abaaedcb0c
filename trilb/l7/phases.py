"""Running plugin phases on the HTTP path: the chains built at start, and the runners.

A Chains holds, per phase, the bound methods of the instances that implement it, built
once per worker from the config (frontend lists, route lists): a phase no plugin
implements is an empty tuple, and a frontend without plugins has no Chains at all, so
its requests never reach this module. Request-side phases run in list order,
response-side ones in reverse (nested middleware). A plugin that raises, or returns
something that is not an action, fails its request closed: 500, logged with its name;
the worker goes on. A Reply ends the request phase: PluginReply carries it to whoever
answers (l7/proxy.py for HTTP/1.1, l7/h2stream.py for HTTP/2, l7/server.py otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from trilb.errors import TrilbError
from trilb.messages import ResponseHead
from trilb.plugin.api import (
    CONTINUE,
    DROP,
    Context,
    Plugin,
    Replace,
    Reply,
    Request,
    Response,
    UseServer,
    WsMessage,
)

log = logging.getLogger(__name__)

Phase = tuple[tuple[str, Callable[..., Any]], ...]


class PluginReply(TrilbError):
    """A plugin answered the request itself (its Reply); or failed it (a 500 Reply)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        super().__init__(f"answered by a plugin: {reply.status}")


class Chains:
    """The phases of an ordered list of plugin instances."""

    __slots__ = ("connect", "done", "request", "request_body", "request_buffer", "response",
                 "response_body", "response_buffer", "ws_down", "ws_up")  # fmt: skip

    def __init__(self, plugins: Sequence[tuple[str, Plugin]]) -> None:
        def phase(name: str, order: Sequence[tuple[str, Plugin]]) -> Phase:
            return tuple((n, getattr(p, name)) for n, p in order
                         if getattr(type(p), name) is not getattr(Plugin, name))  # fmt: skip

        backwards = list(reversed(plugins))
        self.connect = phase("on_connect", plugins)
        self.request = phase("on_request", plugins)
        self.request_body = phase("on_request_body", plugins)
        self.response = phase("on_response", backwards)
        self.response_body = phase("on_response_body", backwards)
        # A message towards the backend meets the plugins in list order, one towards the
        # client in reverse, as the request and the response do.
        self.ws_up = phase("on_websocket_message", plugins)
        self.ws_down = phase("on_websocket_message", backwards)
        self.done = phase("on_done", plugins)
        # The first body call's least size: the largest any plugin of the phase asks.
        self.request_buffer = max([p.request_body_buffer for n, p in plugins
                                   if n in dict(self.request_body)], default=0)  # fmt: skip
        self.response_buffer = max([p.response_body_buffer for n, p in plugins
                                    if n in dict(self.response_body)], default=0)  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.connect or self.request or self.request_body or self.response
                    or self.response_body or self.ws_up or self.done)  # fmt: skip


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


def build(names: Sequence[str], instances: Mapping[str, Plugin]) -> Chains | None:
    """The Chains of these instances, or None when none of them implements a phase."""
    chains = Chains([(n, instances[n]) for n in names])
    return chains if chains else None


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


def run_connect(phase: Phase, ctx: Context) -> Reply | None:
    """Run the connection phase; the Reply that refuses the connection, if any."""
    for name, fn in phase:
        try:
            action = fn(ctx)
        except Exception:
            log.exception("plugin %s failed in on_connect", name)
            return Reply(500)
        if isinstance(action, Reply):
            return action
        if action is not CONTINUE:
            log.error("plugin %s: on_connect returned %r, not an action", name, action)
            return Reply(500)
    return None


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

    __slots__ = ("ctx", "finished", "flow", "passes_response", "route")

    def __init__(self, ctx: Context, route: Chains | None, flow: Flow | None = None) -> None:
        self.ctx = ctx
        self.route = route
        self.flow = flow
        # The response body goes through a phase (a task's work, not the reactor's).
        self.passes_response = flow is not None and bool(flow.response_body)
        self.finished = False  # the done phases ran


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
