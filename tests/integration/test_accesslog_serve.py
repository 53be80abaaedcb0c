"""Access logs of a running trilb: a line per HTTP request (HTTP/1.1 on the reactor's
path and a task's, HTTP/2, trilb's own errors, a WAF block with its rule id) and per
TCP connection, as JSON and as text; SIGUSR1 after a rename starts a new file."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Backend, HttpOrigin, Trilb, free_port, http_config
from tests.integration.test_udp_serve import Echo, free_udp_port

pytestmark = pytest.mark.slow


def lines(path: Path, count: int, limit: float = 5.0) -> list[str]:
    """The file's lines once it has ``count`` (a batch is written within a tick)."""
    deadline = time.monotonic() + limit
    while True:
        text = path.read_text() if path.exists() else ""
        found = text.splitlines()
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def get(url: str, data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_http_requests_are_logged_as_json(
    trilb_factory: Callable[..., Trilb], tmp_path: Path
) -> None:
    port, dead = free_port(), free_port()
    origin = HttpOrigin("one")
    log = tmp_path / "logs" / "access.json"
    log.parent.mkdir()
    trilb_factory(
        f"""
[access_log]
path = "logs/access.json"
format = "json"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"

[[frontends.web.routes]]
path_prefix = "/gone/"
backend = "dead"

[[frontends.web.routes]]
path_prefix = "/guarded/"
backend = "app"
plugins = ["waf"]

[backends.app]
servers = ["{origin.address}"]

[backends.dead]
servers = ["127.0.0.1:{dead}"]

[plugins.waf]
""",
        workers=1,
    )
    assert get(f"http://127.0.0.1:{port}/a?x=1") == 200
    keep = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for n in range(3):  # keep-alive: the later ones take the reactor's pooled path
        keep.request("GET", f"/ka/{n}")
        assert keep.getresponse().read() == b"one"
    keep.close()
    assert get(f"http://127.0.0.1:{port}/b", data=b"posted") == 200  # a body: a task's path
    assert get(f"http://127.0.0.1:{port}/gone/x") == 502  # (connect refused)
    assert get(f"http://127.0.0.1:{port}/guarded/?q=1%27%20OR%201=1--") == 403
    h2 = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version}",
                         "--http2-prior-knowledge", f"http://127.0.0.1:{port}/h2"],
                        capture_output=True, text=True, timeout=15)  # fmt: skip
    assert h2.stdout == "2"
    records = [json.loads(line) for line in lines(log, 8)]
    by_target = {r["target"]: r for r in records}
    first = by_target["/a?x=1"]
    assert (first["method"], first["status"], first["backend"], first["server"]) == (
        "GET",
        200,
        "app",
        origin.address,
    )
    assert first["client"] == "127.0.0.1" and first["frontend"] == "web"
    assert first["bytes"] == 3 and 0 <= first["first_byte_ms"] <= first["total_ms"] < 5000
    assert first["connect_ms"] >= 0 and first["version"] == "1.1"
    assert by_target["/b"]["method"] == "POST" and by_target["/b"]["status"] == 200
    for n in range(3):
        assert by_target[f"/ka/{n}"]["status"] == 200, by_target[f"/ka/{n}"]
        assert by_target[f"/ka/{n}"]["bytes"] == 3
    gone = by_target["/gone/x"]
    assert (gone["status"], gone["backend"], gone["server"], gone["first_byte_ms"]) == (
        502,
        "dead",
        None,
        -1,
    )
    blocked = by_target["/guarded/?q=1%27%20OR%201=1--"]
    assert blocked["status"] == 403 and blocked["notes"].startswith("waf=block:")
    assert blocked["server"] is None  # no backend saw it
    assert by_target["/h2"]["version"] == "2" and by_target["/h2"]["status"] == 200
    origin.stop()


def test_tcp_connections_are_logged_as_text_and_sigusr1_reopens(
    trilb_factory: Callable[..., Trilb], backends: list[Backend], tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "access.log"
    trilb = trilb_factory(
        f"""
[access_log]
path = "{log}"

[frontends.db]
mode = "tcp"
bind = "127.0.0.1:{port}"
default_backend = "pool"

[backends.pool]
servers = ["{backends[0].address}"]
""",
        workers=2,
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        assert conn.recv(16) == b"A\n"
        conn.sendall(b"12345")
        assert conn.recv(16) == b"12345"
    (line,) = lines(log, 1)
    assert f" db pool/{backends[0].address} " in line and line.endswith(" 5/7 closed")
    assert line.startswith("127.0.0.1:")
    os.rename(log, tmp_path / "access.log.1")
    trilb.signal(signal.SIGUSR1)  # the master passes it to its workers
    time.sleep(0.5)
    for _ in range(4):  # (over both workers)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            assert conn.recv(16) == b"A\n"
    assert len(lines(log, 4)) == 4
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 1


def test_bad_requests_unserved_connections_and_udp_flows_get_their_lines(
    trilb_factory: Callable[..., Trilb], tmp_path: Path
) -> None:
    web, db, dns, dead = free_port(), free_port(), free_udp_port(), free_port()
    echo = Echo("E")
    log = tmp_path / "access.log"
    trilb_factory(f"""
[access_log]
path = "{log}"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{web}"
default_backend = "gone"

[frontends.db]
mode = "tcp"
bind = "127.0.0.1:{db}"
default_backend = "gone"

[frontends.dns]
mode = "udp"
bind = "127.0.0.1:{dns}"
default_backend = "echo"
idle_timeout = "500ms"

[backends.gone]
servers = ["127.0.0.1:{dead}"]

[backends.echo]
servers = ["{echo.address}"]
""", workers=1)  # fmt: skip
    with socket.create_connection(("127.0.0.1", web), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", web), timeout=5) as conn:
        # HTTP/2's preface, then a PING where its SETTINGS must be: a connection error.
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x08\x06\0\0\0\0\0" + b"12345678")
        while conn.recv(4096):
            pass  # (SETTINGS, GOAWAY, then the close)
    with socket.create_connection(("127.0.0.1", db), timeout=5) as conn:
        assert conn.recv(16) == b""  # no server: closed
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"ping", ("127.0.0.1", dns))
        assert udp.recv(64) == b"E:ping"
        found = lines(log, 4)  # (the flow's line once it is idle, 0.5 s on)
    text = "\n".join(found)
    assert ' web -/- 0/-1/0 400 - - "- <BADREQ> HTTP/-"' in text, text
    assert ' web -/- 0/-1/0 400 - h2=PROTOCOL_ERROR "- <BADREQ> HTTP/-"' in text, text
    assert " db gone/- 0 0/0 no_server" in text, text
    assert f" dns echo/{echo.address} " in text and " 4/6 idle" in text, text
    echo.stop()


def test_a_bad_access_log_path_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("""
[access_log]
path = "/no/such/dir/access.log"

[frontends.w]
mode = "tcp"
bind = "127.0.0.1:1"
default_backend = "b"

[backends.b]
servers = ["127.0.0.1:2"]
""")
    done: Any = subprocess.run([sys.executable, "-m", "trilb", "check", "-c", str(config)],
                               capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode != 0 and "access_log.path" in done.stderr


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_a_stdout_log_nobody_reads_does_not_stall_the_workers(tmp_path: Path, kind: str) -> None:
    # A log collector that stops reading: trilb's stdout is a pipe (or a socket, as
    # systemd's journal gives) this test leaves full.
    port = free_port()
    origin = HttpOrigin("one")
    config = tmp_path / "trilb.toml"
    config.write_text(http_config(port, [origin.address], '[access_log]\nformat = "json"\n'))
    errors = tmp_path / "trilb.log"
    if kind == "pipe":
        read, write = os.pipe()
    else:
        ours, theirs = socket.socketpair()
        read, write = os.dup(ours.fileno()), os.dup(theirs.fileno())
        ours.close()
        theirs.close()
    with errors.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "trilb", "serve", "-c", str(config),
                                 "--workers", "1"], stdout=write, stderr=err)  # fmt: skip
    os.close(write)
    try:
        deadline = time.monotonic() + 20
        while " ready (generation" not in errors.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, errors.read_text()
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(6000):  # ~1.4 MB of lines: the 64 KiB pipe fills at ~300
            conn.request("GET", "/a")
            assert conn.getresponse().read() == b"one"
        conn.close()
        first = os.read(read, 65536)  # the reader wakes up: whole lines
        assert first.count(b"\n") > 100
        *whole, _ = first.split(b"\n")
        for line in whole:
            assert json.loads(line)["target"] == "/a"
    finally:
        proc.send_signal(signal.SIGTERM)
        os.close(read)
        proc.wait(timeout=20)
        origin.stop()
    assert "line(s) dropped" in errors.read_text()
