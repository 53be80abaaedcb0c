"""The plugin API: what a plugin class implements and what its phases receive and return.

A plugin is a class deriving from Plugin with a ``Settings`` dataclass (its config
schema, validated at load with key paths like the rest of the config) and any of the
phase methods below. One instance per ``[plugins.NAME]`` table per worker serves every
request of that worker: per-request state goes in the Context, never on the instance.
A phase says what happens next with an explicit value (CONTINUE, a Reply, a UseServer),
never with a bare None. Only the phases a plugin overrides are called: a phase no
plugin implements costs nothing per request.

This module holds the types only; l7/phases.py runs them, trilb/plugin/registry.py finds
plugin classes, trilb/plugin/settings.py reads their settings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Final

from trilb.messages import Framing, Headers, RequestHead, ResponseHead


class Continue:
    """Go on with the request (the next plugin, then the router or the backend)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CONTINUE"


CONTINUE: Final = Continue()


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """Answer the request with this response; the backend is not asked."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class UseServer:
    """Send the request to this server of the routed backend (by its name) if it is
    available; else the balancer picks as usual (``Context.pinned_missed`` says so)."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Replace:
    """Forward ``data`` instead of the body piece or WebSocket message the phase was
    given (``b""``: nothing, for now; a message's ``data`` is ``str`` for a text one)."""

    data: bytes | str


class Drop:
    """Do not forward this WebSocket message."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = Drop()

# What a connection or request phase returns.
Action = Continue | Reply | UseServer
# What a body phase returns (a Reply only from the request body phase).
BodyAction = Continue | Replace | Reply
# What the WebSocket message phase returns.
MessageAction = Continue | Replace | Drop


class Context:
    """One request's state, shared by every plugin of its chain and every phase.

    ``client_ip``, ``scheme`` ("http" or "https"), ``frontend`` (its name) are set when
    the request arrives, ``backend`` once it is routed, ``server`` once a server is
    chosen (None if none was), ``status`` once a response is known. ``vars`` is the
    plugins' own: use keys named after your plugin. ``notes`` is what a plugin wants in
    the request's access log line (``ctx.notes["waf"] = "block 942100"``): keep values
    short, without spaces.
    """

    __slots__ = ("backend", "client_ip", "frontend", "notes", "pinned_missed", "scheme",
                 "server", "status", "vars")  # fmt: skip

    def __init__(self, client_ip: str, scheme: str, frontend: str) -> None:
        self.client_ip = client_ip
        self.scheme = scheme
        self.frontend = frontend
        self.backend = ""
        self.server: str | None = None
        self.status = 0
        # A UseServer named a server that was not available; another one was picked.
        self.pinned_missed = False
        self.vars: dict[str, Any] = {}
        self.notes: dict[str, str] = {}


class Message:
    """A request's or a response's header fields, as a plugin reads and changes them.

    Names are case-insensitive strings; values are strings (latin-1, as HTTP/1.1 allows).
    Changing a field makes trilb rebuild the head it forwards.
    """

    __slots__ = ("_head",)

    def __init__(self, head: RequestHead | ResponseHead) -> None:
        self._head = head

    @property
    def _headers(self) -> Headers:
        return self._head.headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        value = self._headers.get(name.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def get_all(self, name: str) -> list[str]:
        return [v.decode("latin-1") for v in self._headers.get_all(name.lower().encode("latin-1"))]

    def items(self) -> list[tuple[str, str]]:
        """Every field, in order: (lowercase name, value)."""
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._headers.items]

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field with this one."""
        self._changed().set(*_field(name, value))

    def add(self, name: str, value: str) -> None:
        """Add a ``name`` field after the others."""
        self._changed().add(*_field(name, value))

    def remove(self, name: str) -> int:
        """Drop every ``name`` field; returns how many there were."""
        if name.lower().encode("latin-1") not in self._headers:
            return 0
        return self._changed().remove(name.lower().encode("latin-1"))

    def _changed(self) -> Headers:
        self._head.raw = b""  # forwarded as rebuilt from the fields from now on
        return self._headers


class Request(Message):
    """The request head, as the request phase sees it."""

    __slots__ = ()
    _head: RequestHead

    @property
    def method(self) -> str:
        return self._head.method.decode("latin-1")

    @property
    def target(self) -> str:
        """The request target as received: path and query ("/a/b?c=d")."""
        return self._head.target.decode("latin-1")

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    @property
    def host(self) -> str | None:
        return self.get("host")

    @property
    def has_body(self) -> bool:
        """Whether a body follows the head (its body phases will run)."""
        return self._head.framing is not Framing.NONE

    @property
    def content_length(self) -> int | None:
        """The body's declared length; None when it is chunked (or there is none)."""
        return self._head.content_length if self.has_body else None


class Response(Message):
    """The response head, as the response phase sees it."""

    __slots__ = ()
    _head: ResponseHead

    @property
    def status(self) -> int:
        return self._head.status


class WsMessage:
    """One whole WebSocket message (fragments joined), as the message phase sees it."""

    __slots__ = ("data", "from_client")

    def __init__(self, data: bytes | str, from_client: bool) -> None:
        self.data = data  # str for a text message, bytes for a binary one
        self.from_client = from_client  # its direction: client to backend, or back

    @property
    def text(self) -> bool:
        return isinstance(self.data, str)


def _field(name: str, value: str) -> tuple[bytes, bytes]:
    return name.lower().encode("latin-1"), value.encode("latin-1")


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a plugin that has none: its table takes no key but ``type``."""


class Plugin:
    """Base class of plugins. Override ``Settings`` and the phases you need.

    Phases, in the order a request meets them (response phases run in reverse plugin
    order, like nested middleware):

    - ``on_connect(ctx)``: a client connected (``ctx.client_ip``); CONTINUE or a Reply
      (sent, then the connection closes);
    - ``on_request(ctx, request)``: the request head arrived; CONTINUE, a Reply, or a
      UseServer;
    - ``on_request_body(ctx, chunk, end)``: a piece of the request body (bytes, framing
      removed; ``end``: the last piece); CONTINUE, a Replace, or a Reply (the backend
      then gets nothing more, and the client the Reply);
    - ``on_response(ctx, response)``: the response head came from the backend (or from
      a Reply); change it in place;
    - ``on_response_body(ctx, chunk, end)``: a piece of the response body; CONTINUE or
      a Replace;
    - ``on_websocket_message(ctx, message)``: a whole WebSocket message (WsMessage),
      either way; CONTINUE, a Replace, or DROP;
    - ``on_done(ctx)``: the exchange is over, whatever its outcome.

    The body phases run only for messages that have a body. The first call gets at
    least ``request_body_buffer`` (``response_body_buffer``) bytes of it, or all of it
    if it is shorter, before anything of it is forwarded: a plugin that must see the
    start of a body before the backend does (a WAF) sets its buffer. A body that ended
    within that first call is forwarded with the length of what the phases returned;
    a longer one is streamed, and keeps its Content-Length if it had one: the phases
    must then return as many bytes as they were given, in total, or the exchange fails.
    """

    # The plugin's settings schema: a frozen dataclass its [plugins.NAME] table is read
    # into (trilb/plugin/settings.py says which field types it understands).
    Settings: ClassVar[type[Any]] = NoSettings
    # The least body the first body phase call gets (see above); an instance may set
    # its own from its settings. A whole body that large may be held in memory.
    request_body_buffer: int = 0
    response_body_buffer: int = 0

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def on_connect(self, ctx: Context) -> Action:
        return CONTINUE

    def on_request(self, ctx: Context, request: Request) -> Action:
        return CONTINUE

    def on_request_body(self, ctx: Context, chunk: bytes, end: bool) -> BodyAction:
        return CONTINUE

    def on_response(self, ctx: Context, response: Response) -> None:
        return None

    def on_response_body(self, ctx: Context, chunk: bytes, end: bool) -> BodyAction:
        return CONTINUE

    def on_websocket_message(self, ctx: Context, message: WsMessage) -> MessageAction:
        return CONTINUE

    def on_done(self, ctx: Context) -> None:
        return None
