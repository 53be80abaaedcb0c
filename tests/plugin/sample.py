"""Plugins the tests name by dotted path (``tests.plugin.sample:NAME``), as a third-party
package's would be named."""

from __future__ import annotations

import dataclasses

from trilb.plugin import CONTINUE, Action, Context, Plugin, Reply, Request, Response, UseServer


@dataclasses.dataclass(frozen=True)
class GateSettings:
    # Requests whose path starts with this are answered 403 by the plugin.
    deny_prefix: str = "/blocked"
    # A request with header x-server: NAME is pinned to that server.
    pin_header: str = "x-server"
    # Requests to this path make the plugin raise (it must fail closed: 500).
    crash_path: str = "/crash"


class Gate(Plugin):
    """Answers, pins and fails on demand; tags responses with what it saw."""

    Settings = GateSettings

    def on_request(self, ctx: Context, request: Request) -> Action:
        s: GateSettings = self.settings
        if request.path.startswith(s.deny_prefix):
            return Reply(403, b"denied by gate\n", (("x-gate", "denied"),))
        if request.path == s.crash_path:
            raise RuntimeError("gate crashed on purpose")
        ctx.vars["gate.path"] = request.path
        wanted = request.get(s.pin_header)
        return UseServer(wanted) if wanted else CONTINUE

    def on_response(self, ctx: Context, response: Response) -> None:
        response.set("x-gate-saw", f"{ctx.vars.get('gate.path')} via {ctx.backend}")
        if ctx.pinned_missed:
            response.set("x-gate-pin", "missed")


class NoAddress(Plugin):
    """Refuses connections from 127.0.0.2 (on_connect)."""

    def on_connect(self, ctx: Context) -> Action:
        return Reply(403, b"not you\n") if ctx.client_ip == "127.0.0.2" else CONTINUE


class Early(Plugin):
    """Implements a phase this version does not run: refused at load."""

    def on_request_body(self, ctx: Context, chunk: bytes) -> bytes:
        return chunk


class Picky(Plugin):
    """Refuses its settings in its constructor."""

    def __init__(self, settings: object) -> None:
        raise ValueError("never happy")
