"""Headless Chromium loads a page through trilb's TLS frontend and talks WebSocket to an
echo backend through trilb, over HTTP/1.1 and (when offered by ALPN) HTTP/2."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.integration.conftest import Trilb, free_port
from tests.integration.test_tls_serve import Pki, pki
from tests.integration.test_websocket_serve import WsOrigin, wait_for, ws_origin

pytestmark = pytest.mark.slow
__all__ = ["pki", "ws_origin"]  # fixtures used by name

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE = b"""<!doctype html>
<title>trilb websocket</title>
<script>
const ws = new WebSocket("wss://" + location.host + "/echo");
ws.binaryType = "arraybuffer";
const seen = [];
function report(text) { fetch("/report?" + encodeURIComponent(text)); }
ws.onopen = () => { ws.send("hello from the browser"); ws.send(new Uint8Array(65536).fill(7)); };
ws.onmessage = (e) => {
  seen.push(typeof e.data === "string" ? e.data : "bytes:" + new Uint8Array(e.data)
    .reduce((sum, b) => sum + b, 0));
  if (seen.length === 2) { ws.close(4100, "browser done"); }
};
const hop = performance.getEntriesByType("navigation")[0].nextHopProtocol;
ws.onclose = (e) => report(hop + "|" + seen.join("|") + "|close:" + e.code);
ws.onerror = () => report("error");
</script>
"""


class Pages(BaseHTTPRequestHandler):
    """Serves the page; records what the page reports."""

    protocol_version = "HTTP/1.1"
    reports: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/report?"):
            Pages.reports.append(urllib.parse.unquote(self.path[8:]))
            body, kind = b"ok", "text/plain"
        else:
            body, kind = PAGE, "text/html"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def pages() -> Iterator[int]:
    Pages.reports = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (make tools installs it)")
@pytest.mark.parametrize(
    ("alpn", "hop"), [('["http/1.1"]', "http/1.1"), ('["h2", "http/1.1"]', "h2")]
)
def test_chromium_talks_websocket_through_the_tls_frontend(
    trilb_factory: Callable[..., Trilb], ws_origin: WsOrigin, pages: int, pki: Pki,
    tmp_path: Path, alpn: str, hop: str,
) -> None:  # fmt: skip
    """Over h2 the page's connection carries the WebSocket as an extended CONNECT stream
    (Chromium uses RFC 8441 where the server's SETTINGS allow it)."""
    port = free_port()
    cert, key = pki.files["default"]
    trilb_factory(f"""
[global]
grace = "1s"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "pages"
tls = {{ certs = [{{ cert = "{cert}", key = "{key}" }}], alpn = {alpn} }}

[[frontends.web.routes]]
path_prefix = "/echo"
backend = "ws"

[backends.pages]
servers = ["127.0.0.1:{pages}"]

[backends.ws]
servers = ["127.0.0.1:{ws_origin.port}"]
""", workers=1)  # fmt: skip
    assert CHROMIUM is not None
    browser = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--ignore-certificate-errors", f"--user-data-dir={tmp_path / 'profile'}",
         f"https://localhost:{port}/page"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: bool(Pages.reports), limit=60)
    finally:
        browser.send_signal(signal.SIGTERM)
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
    assert Pages.reports == [f"{hop}|hello from the browser|bytes:{7 * 65536}|close:4100"]
    wait_for(lambda: ws_origin.close_codes == [4100])
    assert ws_origin.requests[0].headers["x-forwarded-proto"] == "https"
