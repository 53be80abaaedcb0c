"""A locust WebSocket user: connect through trilb, exchange messages, measure round trips.

Each user opens a WebSocket (ws:// or wss://, per --host), then sends a text message and
waits for its echo, reporting each round trip to locust as a request of type "WS" named
"echo" (and the opening handshake as "connect"). Any WebSocket echo server works as the
backend, for example `python loadtests/wsload.py serve PORT`.

    .venv/bin/locust -f loadtests/locustfile_ws.py --headless -u 100 -r 20 -t 30s \\
        --host ws://127.0.0.1:8080

Environment: WS_PATH (default /ws), WS_MESSAGE_BYTES (default 64), WS_THINK_S (pause
between messages, default 0.1; 0 for a flood).
"""

from __future__ import annotations

import os
import ssl
import time

from locust import User, between, events, task
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

PATH = os.environ.get("WS_PATH", "/ws")
MESSAGE = "x" * int(os.environ.get("WS_MESSAGE_BYTES", "64"))
THINK = float(os.environ.get("WS_THINK_S", "0.1"))


class WebSocketUser(User):
    """One WebSocket per user, kept open; each task is one message and its echo."""

    wait_time = between(THINK, THINK)
    ws: ClientConnection | None = None

    def on_start(self) -> None:
        self._connect()

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()

    def _connect(self) -> None:
        url = (self.host or "ws://127.0.0.1:8080").rstrip("/") + PATH
        context = None
        if url.startswith("wss://"):
            context = ssl.create_default_context()
            if os.environ.get("WS_INSECURE"):  # a test certificate
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        start = time.perf_counter()
        try:
            self.ws = connect(url, ssl=context, open_timeout=10, max_size=None)
        except (OSError, WebSocketException) as exc:
            self._report("connect", start, 0, exc)
            self.ws = None
            return
        self._report("connect", start, 0, None)

    @task
    def echo(self) -> None:
        if self.ws is None:
            self._connect()
            if self.ws is None:
                return
        start = time.perf_counter()
        try:
            self.ws.send(MESSAGE)
            reply = self.ws.recv(timeout=10)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._report("echo", start, 0, exc)
            self.ws = None
            return
        error = None if reply == MESSAGE else ValueError("the echo differs")
        self._report("echo", start, len(reply), error)

    def _report(self, name: str, start: float, size: int, exc: Exception | None) -> None:
        events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=size,
            exception=exc,
            context={},
        )
