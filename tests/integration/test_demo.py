"""The README's demo command: `trilb demo` answers with no config file."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _http_get(port: int, path: str = "/") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    return b"".join(chunks)


def test_demo_starts_two_backends_behind_trilb_and_prints_what_to_try():
    proc = subprocess.Popen(
        [sys.executable, "-m", "trilb", "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 15
        while "Ctrl-C" not in "".join(lines) and time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        match = re.search(r"curl http://127\.0\.0\.1:(\d+)/", text)
        assert match, text
        port = int(match.group(1))
        assert f"nc 127.0.0.1 {port}" in text
        bodies = [_http_get(port) for _ in range(4)]
        assert all(b.startswith(b"HTTP/1.1 200 OK") for b in bodies)
        names = {b.split(b"demo backend ", 1)[1][:1] for b in bodies}
        assert names == {b"A", b"B"}
        web = re.search(r"curl -i http://127\.0\.0\.1:(\d+)/", text)
        assert web, text
        web_port = int(web.group(1))
        bodies = [_http_get(web_port) for _ in range(4)]
        assert all(b.startswith(b"HTTP/1.1 200 OK") and b"via: 1.1 trilb" in b for b in bodies)
        assert {b.split(b"demo backend ", 1)[1][:1] for b in bodies} == {b"A", b"B"}
        routed = _http_get(web_port, "/b/page")
        assert b"demo backend B, you asked for /b/page" in routed
        # TLS with HTTP/2, on the certificate the demo made, with the printed curl line.
        secure = re.search(r"curl -k --http2 -i (https://127\.0\.0\.1:\d+/)", text)
        assert secure, text
        done = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w",
                               "%{http_version} %{http_code}", secure.group(1)],
                              capture_output=True, text=True, timeout=15)  # fmt: skip
        assert done.stdout == "2 200", done
        # The stats page it prints is served, and its API sees the demo's servers.
        stats = re.search(r"open (http://127\.0\.0\.1:\d+)/stats", text)
        assert stats, text
        with urllib.request.urlopen(stats.group(1) + "/stats", timeout=5) as page:
            assert b"<title>" in page.read()
        with urllib.request.urlopen(stats.group(1) + "/api/backends", timeout=5) as api:
            names = [s["name"] for s in json.load(api)["backends"][0]["servers"]]
        assert names == ["demo-A", "demo-B"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
