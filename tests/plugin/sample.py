"""Plugins the tests name by dotted path (``tests.plugin.sample:NAME``), as a third-party
package's would be named."""

from __future__ import annotations

import dataclasses

from trilb.plugin import (
    CONTINUE,
    DROP,
    Action,
    BodyAction,
    Context,
    MessageAction,
    Plugin,
    Replace,
    Reply,
    Request,
    Response,
    UseServer,
    WsMessage,
)


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


@dataclasses.dataclass(frozen=True)
class ScrubSettings:
    buffer: int = 0  # its request_body_buffer
    word: str = "secret"  # masked with as many X (the length stays)
    refuse: str = "forbidden"  # a piece holding it is answered 422


class Scrub(Plugin):
    """Request bodies: masks a word, refuses another; tells in the response how many
    calls it had and how long the first piece was."""

    Settings = ScrubSettings

    def __init__(self, settings: ScrubSettings) -> None:
        super().__init__(settings)
        self.request_body_buffer = settings.buffer
        self.word = settings.word.encode()
        self.mask = b"X" * len(self.word)
        self.refuse = settings.refuse.encode()

    def on_request_body(self, ctx: Context, chunk: bytes, end: bool) -> BodyAction:
        calls = ctx.vars.setdefault("scrub.calls", [])
        calls.append(len(chunk))
        if self.refuse in chunk:
            return Reply(422, b"refused body\n")
        if self.word in chunk:
            return Replace(chunk.replace(self.word, self.mask))
        return CONTINUE

    def on_response(self, ctx: Context, response: Response) -> None:
        calls = ctx.vars.get("scrub.calls", [])
        response.set("x-scrub", f"{len(calls)} {calls[0] if calls else 0}")


@dataclasses.dataclass(frozen=True)
class ShoutSettings:
    suffix: str = ""  # appended at the end of each body: its length changes
    buffer: int = 0
    crash: str = ""  # a piece holding it makes the plugin raise


class Shout(Plugin):
    """Response bodies: upper-cased, and a suffix added at the end."""

    Settings = ShoutSettings

    def __init__(self, settings: ShoutSettings) -> None:
        super().__init__(settings)
        self.response_body_buffer = settings.buffer
        self.suffix = settings.suffix.encode()
        self.crash = settings.crash.encode()

    def on_response_body(self, ctx: Context, chunk: bytes, end: bool) -> BodyAction:
        if self.crash and self.crash in chunk:
            raise RuntimeError("shout crashed on purpose")
        return Replace(chunk.upper() + (self.suffix if end else b""))


class Chat(Plugin):
    """WebSocket messages: the client's text upper-cased, "drop" dropped, "crash" makes
    it raise; binary messages from the backend reversed."""

    def on_websocket_message(self, ctx: Context, message: WsMessage) -> MessageAction:
        if message.from_client and isinstance(message.data, str):
            if message.data == "drop":
                return DROP
            if message.data == "crash":
                raise RuntimeError("chat crashed on purpose")
            return Replace(message.data.upper())
        if not message.from_client and isinstance(message.data, bytes):
            return Replace(message.data[::-1])
        return CONTINUE


class Picky(Plugin):
    """Refuses its settings in its constructor."""

    def __init__(self, settings: object) -> None:
        raise ValueError("never happy")
