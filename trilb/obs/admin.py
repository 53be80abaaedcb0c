"""The admin endpoint on ``[admin] bind``, served by the control process: /stats (a
live HTML page), /metrics (Prometheus), /api (JSON: read everything; set a server's
state and weight).

A change made through the API is written to the generation's shared mapping
(control/shared.py); every worker reads it within one sweeper tick (at most a second).
Requests are parsed by the data path's strict HTTP/1.1 parser, one per connection,
each within a deadline. With ``[admin] token`` every request but the page itself (which
holds no data: its script sends the token) needs ``Authorization: Bearer TOKEN``,
compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import time
from importlib import resources
from typing import Any

import trio

from trilb import __version__
from trilb.config.schema import Config
from trilb.control.shared import ADMIN_STATES, SharedState
from trilb.errors import ProtocolError
from trilb.l7.http1 import RequestParser
from trilb.messages import Framing
from trilb.obs import metrics
from trilb.obs.stats import Check, Window, snapshot

log = logging.getLogger(__name__)

# A request, head and body, must arrive within this; its body is small JSON.
REQUEST_TIMEOUT = 10.0
MAX_BODY = 65536
# Connections served at once: each /api or /metrics sums every counter on the loop the
# health checks run on, so a flood must not starve them.
MAX_CLIENTS = 32
MAX_WEIGHT = 256  # (HAProxy's limit: weights are relative)
REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
           413: "Content Too Large", 415: "Unsupported Media Type",
           500: "Internal Server Error"}  # fmt: skip


class Reply(Exception):
    """An answer other than the route's own (an error, a redirect)."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


class AdminServer:
    """The admin endpoint of one generation."""

    def __init__(
        self,
        config: Config,
        shared: SharedState,
        generation: int,
        checks: dict[tuple[str, int], Check],
    ) -> None:
        self.config = config
        self.shared = shared
        self.generation = generation
        self.checks = checks
        self.window = Window()
        self.started = time.monotonic()
        self.token = config.admin.token.encode() if config.admin.token else None
        self.page = resources.files("trilb.obs").joinpath("stats.html").read_bytes()
        self.clients = trio.CapacityLimiter(MAX_CLIENTS)
        # The Host names a request may carry: a web page elsewhere that makes a browser
        # send requests here (DNS rebinding) names its own host instead.
        bind = config.admin.bind
        host = f"[{bind.host}]" if ":" in bind.host else bind.host
        self.hosts = {h.encode() for h in (host, "localhost", "127.0.0.1", "[::1]")}

    async def serve(self, sock: socket.socket, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve ``sock`` until cancelled."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sample)
                task_status.started()
                await trio.serve_listeners(self._handle, [listener], handler_nursery=nursery)
        finally:  # (stopped: this process's copy goes, the master's stays for the next)
            listener.socket.close()

    async def _sample(self) -> None:
        """Once a second: the summed counters, for rates and recent latencies."""
        while True:
            self.window.add(time.monotonic(), self.shared.totals())
            await trio.sleep(1.0)

    # --- HTTP -------------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                self.clients.acquire_nowait()
            except trio.WouldBlock:
                return  # MAX_CLIENTS busy: closed at once, holding nothing
            try:
                with trio.move_on_after(2 * REQUEST_TIMEOUT):  # (the answer's send too)
                    await self._exchange(stream)
            finally:
                self.clients.release()

    async def _exchange(self, stream: trio.SocketStream) -> None:
        method = ""
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                method, path, headers, body = await _read_request(stream)
                status, ctype, payload, extra = self.respond(method, path, headers, body)
        except Reply as exc:
            status, ctype, extra = exc.status, "application/json", exc.headers
            payload = _json({"error": str(exc)})
        except trio.TooSlowError:
            status, ctype, extra = 408, "application/json", ()
            payload = _json({"error": f"no whole request within {REQUEST_TIMEOUT:g}s"})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except Exception:  # a request must never take the control process down
            log.exception("admin endpoint: %s request failed", method or "a")
            status, ctype, extra = 500, "application/json", ()
            payload = _json({"error": "internal error (logged)"})
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
                f"Content-Type: {ctype}", f"Content-Length: {len(payload)}",
                "Cache-Control: no-store", "Connection: close",
                *(f"{k}: {v}" for k, v in extra)]  # fmt: skip
        if method == "HEAD":
            payload = b""
        try:
            await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def respond(
        self, method: str, path: str, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[int, str, bytes, tuple[tuple[str, str], ...]]:
        """(status, content type, payload, extra fields) for one request.

        Raises:
          Reply: an error (or a redirect) to send instead.
        """
        if self.token is None and not _trusted_host(_host(headers), self.hosts):
            raise Reply(403, "Host must name this endpoint (127.0.0.1, localhost or its "
                        "bind address): requests made for another site are refused")  # fmt: skip
        if path in ("/", "/stats", "/stats/"):
            if path == "/":
                raise Reply(302, "see /stats", (("Location", "/stats"),))
            _allow(method, "GET", "HEAD")
            return 200, "text/html; charset=utf-8", self.page, ()
        self._authorize(headers)
        if path == "/metrics":
            _allow(method, "GET", "HEAD")
            text = metrics.exposition(self.config, self.shared, self.shared.totals(),
                                      self.generation)  # fmt: skip
            return 200, metrics.CONTENT_TYPE, text.encode(), ()
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != "api":
            raise Reply(404, f"no such endpoint {path!r}: try /stats, /metrics or /api")
        return 200, "application/json", _json(self.api(method, parts[1:], body, headers)), ()

    def _authorize(self, headers: dict[bytes, bytes]) -> None:
        if self.token is None:
            return
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.token):
            raise Reply(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                        (("WWW-Authenticate", 'Bearer realm="trilb"'),))  # fmt: skip

    # --- the JSON API -----------------------------------------------------------------

    def api(self, method: str, parts: list[str], body: bytes, headers: dict[bytes, bytes]) -> Any:
        """The JSON answer of /api/``parts``."""
        if not parts:
            _allow(method, "GET", "HEAD")
            return self.everything()
        kind = parts[0]
        if kind == "frontends" and len(parts) == 1:
            _allow(method, "GET", "HEAD")
            return {"frontends": self.everything()["frontends"]}
        if kind != "backends":
            raise Reply(404, f"no such endpoint /api/{'/'.join(parts)}: try /api/backends "
                        "or /api/frontends")  # fmt: skip
        backends = self.everything()["backends"]
        if len(parts) == 1:
            _allow(method, "GET", "HEAD")
            return {"backends": backends}
        backend = next((b for b in backends if b["name"] == parts[1]), None)
        if backend is None:
            raise Reply(404, f"no backend {parts[1]!r}")
        if len(parts) == 2:
            _allow(method, "GET", "HEAD")
            return backend
        if parts[2] != "servers" or len(parts) != 4:
            raise Reply(404, "servers are at /api/backends/NAME/servers/SERVER")
        index = next((i for i, s in enumerate(backend["servers"]) if s["name"] == parts[3]),
                     None)  # fmt: skip
        if index is None:
            raise Reply(404, f"backend {parts[1]!r} has no server {parts[3]!r}")
        if method == "POST":
            media = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
            if media != b"application/json":  # (a form a web page posts here is refused)
                raise Reply(415, "send the change as JSON (Content-Type: application/json)")
            self.change(parts[1], index, body)
            backend = next(b for b in self.everything()["backends"] if b["name"] == parts[1])
        else:
            _allow(method, "GET", "HEAD", "POST")
        return backend["servers"][index]

    def change(self, backend: str, index: int, body: bytes) -> None:
        """Apply a POST's ``{"state": ..., "weight": ...}`` to one server.

        Raises:
          Reply: 400 for a body that is not such an object (nothing is changed then).
        """
        try:
            wanted = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise Reply(400, f"the body is not JSON: {exc}") from None
        if not isinstance(wanted, dict) or not wanted or set(wanted) - {"state", "weight"}:
            raise Reply(400, 'expected an object with "state" (ready, drain or maint) '
                        'and/or "weight" (0 to 256)')  # fmt: skip
        state = wanted.get("state")
        if state is not None and state not in ADMIN_STATES:
            raise Reply(400, f"state: expected ready, drain or maint, not {state!r}")
        weight = wanted.get("weight")
        if weight is not None and (type(weight) is not int or not 0 <= weight <= MAX_WEIGHT):
            raise Reply(400, f"weight: expected an integer from 0 to {MAX_WEIGHT}, "
                        f"not {weight!r}")  # fmt: skip
        server = self.config.backends[backend].servers[index].name
        if state is not None:
            self.shared.set_admin(backend, index, ADMIN_STATES.index(state))
        if weight is not None:
            self.shared.set_weight(backend, index, weight)
        log.warning("backend %s: server %s set by the admin API: %s", backend, server,
                    ", ".join(f"{k} {v}" for k, v in wanted.items()))  # fmt: skip

    def everything(self) -> dict[str, Any]:
        now = time.monotonic()
        data = snapshot(self.config, self.shared, self.shared.totals(), self.window, now,
                        self.checks)  # fmt: skip
        return {
            "version": __version__,
            "generation": self.generation,
            "uptime": round(now - self.started, 1),
            "workers": self.shared.workers,
            **data,
        }


def _host(headers: dict[bytes, bytes]) -> bytes:
    """The Host field without its port or a final dot, lowercased."""
    host = headers.get(b"host", b"").strip().lower()
    if not (host.startswith(b"[") and host.endswith(b"]")):
        name, colon, port = host.rpartition(b":")
        host = name if colon and port.isdigit() else host
    return host.rstrip(b".")


def _trusted_host(host: bytes, names: set[bytes]) -> bool:
    """A Host a request to this endpoint may carry without a token: none (a script; a
    browser always sends one), an IP literal, or one of ``names``. DNS rebinding needs
    a hostname of the attacker's, which is none of these."""
    if not host or host in names:
        return True
    try:
        ipaddress.ip_address(host.strip(b"[]").decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise Reply(405, f"{method} is not allowed here (allowed: {', '.join(allowed)})",
                    (("Allow", ", ".join(allowed)),))  # fmt: skip


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


async def _read_request(
    stream: trio.SocketStream,
) -> tuple[str, str, dict[bytes, bytes], bytes]:
    """One request: (method, path without the query, fields, body).

    Raises:
      Reply: a malformed request (the parser's status), or a body over ``MAX_BODY``.
    """
    parser = RequestParser(8192, 16384, 64)
    head = None
    while head is None:
        data = await stream.receive_some(16384)
        if not data:
            raise trio.BrokenResourceError
        try:
            head = parser.feed(data)
        except ProtocolError as exc:
            raise Reply(exc.status, str(exc)) from None
    if head.framing is Framing.CHUNKED:
        raise Reply(411, "send the body with a Content-Length")
    length = head.content_length or 0
    if length > MAX_BODY:
        raise Reply(413, f"a body over {MAX_BODY} bytes")
    body = parser.leftover
    while len(body) < length:
        more = await stream.receive_some(length - len(body))
        if not more:
            raise trio.BrokenResourceError
        body += more
    fields = {name.lower(): value for name, value in head.headers}
    path = head.target.decode("latin-1").partition("?")[0]
    return head.method.decode("latin-1"), path, fields, body[:length]
