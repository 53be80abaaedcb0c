"""The ``sticky`` plugin: cookie-based session affinity, with no shared state.

    [plugins.sticky]
    cookie = "TRILB_SERVER"
    key = "a long random secret"          # or key_file = "/etc/trilb/sticky.key"
    max_age = "1d"                        # "0s": a session cookie
    secure = true
    httponly = true
    samesite = "Lax"                      # "Strict", "None", or "" for none

The first response of a client gets a cookie naming the server that answered; later
requests with that cookie go to the same server while it is available (up, with weight),
else the balancer picks another and the cookie is issued again for it. The value is the
server's name sealed with AES-GCM under a key derived from ``key``: opaque (no backend
address leaks) and authenticated (a forged or changed cookie fails to open and is
ignored). Every worker and every trilb instance with the same key reads the same
cookies: nothing is shared at run time. Run it on the routes (or frontend) whose
backend it pins.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trilb.config.values import parse_duration
from trilb.errors import ConfigError
from trilb.plugin import CONTINUE, Action, Context, Plugin, Request, Response, UseServer

# Where the server named by the request's cookie is kept (Context.vars).
PINNED = "sticky.server"
# A nonce per sealed value: AES-GCM's 96-bit nonce, random (few cookies per key).
NONCE = 12
# Longer cookie values are not ours (a server name is short): not even tried.
MAX_VALUE = 512


def _samesite(value: object, path: str) -> str:
    if value not in ("Lax", "Strict", "None", ""):
        raise ConfigError(path, f'expected "Lax", "Strict", "None" or "", got {value!r}')
    return str(value)


def _cookie_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in ' ;,="\t\r\n'):
        raise ConfigError(path, f"expected a cookie name, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class StickySettings:
    cookie: str = dataclasses.field(default="TRILB_SERVER", metadata={"parse": _cookie_name})
    key: str = ""
    key_file: str = ""
    max_age: float = dataclasses.field(default=0.0, metadata={"parse": parse_duration})
    secure: bool = False
    httponly: bool = True
    samesite: str = dataclasses.field(default="Lax", metadata={"parse": _samesite})


class Sticky(Plugin):
    """Pins each client to one server of the routed backend by a sealed cookie."""

    Settings = StickySettings

    def __init__(self, settings: StickySettings) -> None:
        super().__init__(settings)
        self.settings: StickySettings = settings
        secret = settings.key.encode()
        if settings.key_file:
            with open(settings.key_file, "rb") as f:
                secret = f.read().strip()
        if len(secret) < 16:
            raise ValueError("key (or key_file's content) must be at least 16 bytes")
        # The cookie name is bound in: a value made for another cookie does not open.
        self.aead = AESGCM(hashlib.sha256(b"trilb sticky\0" + secret).digest())
        self.aad = settings.cookie.encode()
        attrs = ["Path=/"]
        if settings.max_age:
            attrs.append(f"Max-Age={int(settings.max_age)}")
        if settings.secure:
            attrs.append("Secure")
        if settings.httponly:
            attrs.append("HttpOnly")
        if settings.samesite:
            attrs.append(f"SameSite={settings.samesite}")
        self.attributes = "; ".join(attrs)
        self.prefix = settings.cookie + "="

    def seal(self, server: str) -> str:
        """The cookie value that names ``server``."""
        nonce = os.urandom(NONCE)
        sealed = self.aead.encrypt(nonce, server.encode(), self.aad)
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, value: str) -> str | None:
        """The server a cookie value names, or None for a value this key did not seal."""
        if len(value) > MAX_VALUE:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            return self.aead.decrypt(raw[:NONCE], raw[NONCE:], self.aad).decode()
        except (ValueError, binascii.Error, InvalidTag, UnicodeDecodeError):
            return None

    def on_request(self, ctx: Context, request: Request) -> Action:
        value = self._cookie(request)
        server = self.open(value) if value is not None else None
        if server is None:
            return CONTINUE
        ctx.vars[PINNED] = server
        return UseServer(server)

    def on_response(self, ctx: Context, response: Response) -> None:
        server = ctx.server
        if server is None or (ctx.vars.get(PINNED) == server and not ctx.pinned_missed):
            return  # no server answered, or the cookie names this one already
        response.add("set-cookie", f"{self.prefix}{self.seal(server)}; {self.attributes}")

    def _cookie(self, request: Request) -> str | None:
        prefix = self.prefix
        for header in request.get_all("cookie"):
            for part in header.split(";"):
                part = part.strip()
                if part.startswith(prefix):
                    return part[len(prefix) :]
        return None
