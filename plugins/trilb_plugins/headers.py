"""The ``headers`` plugin: set, add, remove and rewrite request and response header fields.

    [plugins.headers]
    request = { set = { "X-Env" = "prod" }, remove = ["X-Debug"] }
    response = { remove = ["Server"], add = { "X-Served-By" = "%{frontend}" } }
    request_id = "X-Request-Id"      # generated when the request has none

Operations run in this order: remove, set, add, replace. Values may hold variables:
%{client_ip}, %{scheme}, %{host}, %{frontend}, %{backend} (response side), and
%{request_id}. ``replace`` entries rewrite the values of one field with a regular
expression: { name = "Location", pattern = "^http://", with = "https://" }.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

from trilb.errors import ConfigError
from trilb.plugin import CONTINUE, Action, Context, Message, Plugin, Request, Response

VARIABLE = re.compile(r"%\{([a-z_]+)\}")
VARIABLES = ("client_ip", "scheme", "host", "frontend", "backend", "request_id")
# The key the request id is kept under in Context.vars.
REQUEST_ID = "headers.request_id"


def _pattern(value: object, path: str) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a regular expression, got {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ConfigError(path, f"invalid regular expression: {exc}") from None


def _template(value: object, path: str) -> str:
    """A value that may hold %{variables}: only known ones."""
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {value!r}")
    for name in VARIABLE.findall(value):
        if name not in VARIABLES:
            known = ", ".join(f"%{{{v}}}" for v in VARIABLES)
            raise ConfigError(path, f"unknown variable %{{{name}}} (known: {known})")
    return value


def _templates(value: object, path: str) -> dict[str, str]:
    """A table of field names to values (templates)."""
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a table of field names and values, got {value!r}")
    return {str(k): _template(v, f'{path}."{k}"') for k, v in value.items()}


@dataclasses.dataclass(frozen=True)
class Replace:
    name: str
    pattern: re.Pattern[str] = dataclasses.field(metadata={"parse": _pattern})
    with_: str = dataclasses.field(default="", metadata={"key": "with", "parse": _template})


@dataclasses.dataclass(frozen=True)
class Rewrite:
    set: dict[str, str] = dataclasses.field(default_factory=dict, metadata={"parse": _templates})
    add: dict[str, str] = dataclasses.field(default_factory=dict, metadata={"parse": _templates})
    remove: tuple[str, ...] = ()
    replace: tuple[Replace, ...] = ()


@dataclasses.dataclass(frozen=True)
class HeaderSettings:
    request: Rewrite = dataclasses.field(default_factory=Rewrite)
    response: Rewrite = dataclasses.field(default_factory=Rewrite)
    # A field that carries a request id: kept when the request has one, else generated
    # (a UUID4); "" for none.
    request_id: str = ""


class Headers(Plugin):
    """Header rewriting on both sides."""

    Settings = HeaderSettings

    def __init__(self, settings: HeaderSettings) -> None:
        super().__init__(settings)
        self.settings: HeaderSettings = settings

    def on_request(self, ctx: Context, request: Request) -> Action:
        field = self.settings.request_id
        if field:
            rid = request.get(field)
            if rid is None:
                rid = str(uuid.uuid4())
                request.set(field, rid)
            ctx.vars[REQUEST_ID] = rid
        _apply(self.settings.request, request, ctx, request.host)
        return CONTINUE

    def on_response(self, ctx: Context, response: Response) -> None:
        field = self.settings.request_id
        if field and REQUEST_ID in ctx.vars and response.get(field) is None:
            response.set(field, ctx.vars[REQUEST_ID])
        _apply(self.settings.response, response, ctx, None)


def _apply(rw: Rewrite, message: Message, ctx: Context, host: str | None) -> None:
    for name in rw.remove:
        message.remove(name)
    for name, value in rw.set.items():
        message.set(name, _expand(value, ctx, host))
    for name, value in rw.add.items():
        message.add(name, _expand(value, ctx, host))
    for r in rw.replace:
        values = message.get_all(r.name)
        if values:
            message.remove(r.name)
            for v in values:
                message.add(r.name, r.pattern.sub(_expand(r.with_, ctx, host), v))


def _expand(value: str, ctx: Context, host: str | None) -> str:
    if "%{" not in value:
        return value
    known = {
        "client_ip": ctx.client_ip,
        "scheme": ctx.scheme,
        "host": host or "",
        "frontend": ctx.frontend,
        "backend": ctx.backend,
        "request_id": str(ctx.vars.get(REQUEST_ID, "")),
    }
    return VARIABLE.sub(lambda m: known[m.group(1)], value)
