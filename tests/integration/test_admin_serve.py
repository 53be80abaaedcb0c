"""The admin endpoint of a running trilb: a drain set through the API reaches every
worker; /metrics counts real traffic and parses with Prometheus' parser; the live
stats page renders in headless Chromium; the token; a reload hands the endpoint over."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Backend, HttpOrigin, Trilb, free_port

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "s3cret-admin-token-for-tests"
# Screenshots of the stats page are kept here (CI keeps the folder as an artifact).
ARTIFACTS = Path(os.environ.get("TRILB_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))


def call(port: int, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     method="POST" if data is not None else "GET")  # fmt: skip
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(raw) if "json" in kind else raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def greeting(port: int) -> tuple[socket.socket, str]:
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    name = conn.recv(16).decode().strip()
    return conn, name


def wait_for(check: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start(trilb_factory: Callable[..., Trilb], config: str, workers: int = 2) -> Trilb:
    trilb = trilb_factory(config, workers=workers, ready=workers + 1)
    trilb.wait_ready(workers + 1)  # (the control process says ready too)
    return trilb


def tcp_with_admin(port: int, admin: int, servers: list[str], extra: str = "") -> str:
    listed = ", ".join(f'"{s}"' for s in servers)
    return f"""
[global]
grace = "3s"

[admin]
bind = "127.0.0.1:{admin}"
{extra}
[frontends.front]
mode = "tcp"
bind = "127.0.0.1:{port}"
default_backend = "pool"

[backends.pool]
servers = [{listed}]
"""


def test_a_drain_through_the_api_reaches_every_worker(
    backends: list[Backend], trilb_factory: Callable[..., Trilb]
) -> None:
    port, admin = free_port(), free_port()
    a, b = backends
    start(trilb_factory, tcp_with_admin(port, admin, [a.address, b.address]))
    held = []
    while not any(name == "A" for _, name in held):  # a connection to A, kept open
        held.append(greeting(port))
        assert len(held) < 10
    to_a = next(conn for conn, name in held if name == "A")
    status, server = call(admin, f"/api/backends/pool/servers/{a.address}", {"state": "drain"})
    assert status == 200 and server["state"] == "drain"
    time.sleep(1.2)  # (workers take the change within one tick: a second at most)
    before = b.connections
    # 60 new connections from as many source ports: the kernel spreads them over
    # both workers' sockets, and none reaches the drained server.
    names = []
    for _ in range(60):
        conn, name = greeting(port)
        names.append(name)
        conn.close()
    assert names == ["B"] * 60 and b.connections - before == 60
    to_a.sendall(b"still here")  # the drained server keeps its connection
    assert to_a.recv(64) == b"still here"
    status, data = call(admin, "/api/backends/pool")
    assert [s["state"] for s in data["servers"]] == ["drain", "up"]
    wait_for(lambda: call(admin, "/api/backends/pool")[1]["servers"][0]["active"] == 1)
    call(admin, f"/api/backends/pool/servers/{a.address}", {"state": "ready", "weight": 3})
    time.sleep(1.2)
    names = []
    for _ in range(40):
        conn, name = greeting(port)
        names.append(name)
        conn.close()
    # Weights 3:1, each worker round-robin on its own: A gets about three in four.
    assert 20 <= names.count("A") <= 36, names
    call(admin, f"/api/backends/pool/servers/{b.address}", {"state": "maint"})
    time.sleep(1.2)
    assert {greeting(port)[1] for _ in range(20)} == {"A"}
    for conn, _ in held:
        conn.close()
    total = 120 + len(held)  # (published within a tick)
    wait_for(lambda: call(admin, "/api/frontends")[1]["frontends"][0]["connections"] == total)


def test_metrics_count_the_traffic_and_parse(trilb_factory: Callable[..., Trilb]) -> None:
    port, admin, dead = free_port(), free_port(), f"127.0.0.1:{free_port()}"
    origins = [HttpOrigin("one"), HttpOrigin("two")]
    start(
        trilb_factory,
        f"""
[admin]
bind = "127.0.0.1:{admin}"

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port}"
default_backend = "app"

[[frontends.web.routes]]
path_prefix = "/gone"
backend = "dead"

[backends.app]
servers = ["{origins[0].address}", "{origins[1].address}"]

[backends.dead]
connect_timeout = "1s"
servers = ["{dead}"]
""",
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for _ in range(30):  # keep-alive: one worker
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    for _ in range(10):  # one connection each
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
    for _ in range(3):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/gone", timeout=5)
        assert caught.value.code in (502, 503)
    time.sleep(1.2)  # published within a tick
    status, text = call(admin, "/metrics")
    assert status == 200
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    web = {"frontend": "web", "mode": "http"}
    assert value("trilb_frontend_responses_total", **web, code="2xx") == 40
    assert value("trilb_frontend_responses_total", **web, code="5xx") == 3
    assert value("trilb_frontend_connections_total", **web) == 14
    # 30 + 10 heads of some 25 bytes in; each 200 is some 40 bytes out
    assert 40 * 20 < value("trilb_frontend_received_bytes_total", **web) < 43 * 200
    assert 40 * 30 < value("trilb_frontend_sent_bytes_total", **web) < 43 * 300
    per_server = [{"backend": "app", "server": o.address} for o in origins]
    assert sum(value("trilb_server_sessions_total", **lab) for lab in per_server) == 40
    for name in ("trilb_server_sent_bytes_total", "trilb_server_received_bytes_total"):
        assert sum(value(name, **lab) for lab in per_server) > 40 * 30  # (heads both ways)
    assert sum(value("trilb_server_response_seconds_count", **lab) for lab in per_server) == 40
    assert sum(value("trilb_server_responses_total", **lab, code="2xx")
               for lab in per_server) == 40  # fmt: skip
    assert value("trilb_server_failures_total", backend="dead", server=dead) == 3
    for origin in origins:
        origin.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (make tools installs it)")
def test_the_stats_page_renders_live_in_chromium(
    backends: list[Backend], trilb_factory: Callable[..., Trilb], tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    a, b = backends
    start(trilb_factory, tcp_with_admin(port, admin, [a.address, b.address],
                                        f'token = "{TOKEN}"\n'))  # fmt: skip
    assert call(admin, "/api")[0] == 401
    call(admin, f"/api/backends/pool/servers/{b.address}", {"state": "drain"}, TOKEN)
    for _ in range(6):
        greeting(port)[0].close()
    url = f"http://127.0.0.1:{admin}/stats#token={TOKEN}"
    dom = chromium(tmp_path, "--dump-dom", url)
    assert 'id="stats" data-loaded="1"' in dom or 'data-loaded="1" id="stats"' in dom, dom
    assert f'data-backend="pool" data-server="{a.address}" data-state="up"' in dom
    assert f'data-backend="pool" data-server="{b.address}" data-state="drain"' in dom
    assert 'data-frontend="front"' in dom and "state-drain" in dom
    ARTIFACTS.mkdir(exist_ok=True)
    for name, size in (("stats-desktop.png", "1280,800"), ("stats-phone.png", "390,844")):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        chromium(tmp_path, f"--screenshot={shot}", f"--window-size={size}", url)
        assert shot.stat().st_size > 10_000  # a rendered page, not an empty one
    # Without the token the page loads but shows the refusal, not data.
    dom = chromium(tmp_path, "--dump-dom", f"http://127.0.0.1:{admin}/stats")
    assert "HTTP 401" in dom and "data-server=" not in dom


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # (its scratch files stay in the test's)
    done = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    return done.stdout


def test_a_reload_hands_the_endpoint_to_the_new_generation(
    backends: list[Backend], trilb_factory: Callable[..., Trilb]
) -> None:
    port, admin = free_port(), free_port()
    a, b = backends
    config = tcp_with_admin(port, admin, [a.address, b.address])
    trilb = start(trilb_factory, config)
    call(admin, f"/api/backends/pool/servers/{a.address}", {"state": "maint"})
    trilb.config_path.write_text(config.replace('grace = "3s"', 'grace = "2s"'))
    trilb.signal(signal.SIGHUP)
    trilb.wait_log("generation 1: draining", 15)
    # Every answer now comes from generation 2, which kept the operator's state.
    for _ in range(10):
        status, data = call(admin, "/api")
        assert status == 200 and data["generation"] == 2
        assert data["backends"][0]["servers"][0]["state"] == "maint"
    assert {greeting(port)[1] for _ in range(10)} == {"B"}
