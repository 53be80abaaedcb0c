"""Plugin chains: per phase, the bound methods of the instances that implement it.

Built once per worker from the config's lists (a frontend's, a route's): a phase no
plugin implements is an empty tuple, so it costs nothing per request. Request-side
phases run in list order, response-side ones in reverse (nested middleware). The
connection phase runs here too, as L4 (l4/tcp.py) and L7 (l7/client.py) both run it;
the HTTP phases' runners are in l7/phases.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trilb.plugin.api import CONTINUE, Context, Plugin, Reply

log = logging.getLogger(__name__)

Phase = tuple[tuple[str, Callable[..., Any]], ...]


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


def build(names: Sequence[str], instances: Mapping[str, Plugin]) -> Chains | None:
    """The Chains of these instances, or None when none of them implements a phase."""
    chains = Chains([(n, instances[n]) for n in names])
    return chains if chains else None


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
