"""``trilb demo``: trilb in front of built-in backends, with no config file to write.

Owns the demo's set-up: backend processes, a generated config, the hints it prints.
The serving itself is the ordinary master (cli.run_master).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from trilb.config.load import load_config
from trilb.demo.cert import write_self_signed

if TYPE_CHECKING:
    from trilb.master.arbiter import Arbiter

# Two backends are enough to watch round-robin alternate.
NAMES = ("A", "B")


def _start_backend(name: str) -> tuple[subprocess.Popen[bytes], int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port: int = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trilb.demo.backend", "--fd", str(sock.fileno()), "--name", name],
        pass_fds=[sock.fileno()],
    )
    sock.close()
    return proc, port


def _config_text(port: int, workers: int, backends: list[int], cert: str, key: str) -> str:
    entries = [
        f'{{ address = "127.0.0.1:{p}", name = "demo-{n}" }}'
        for n, p in zip(NAMES, backends, strict=True)
    ]
    servers = ", ".join(entries)
    return f"""# written by `trilb demo`: edit it and send SIGHUP to the master to reload
[global]
workers = {workers}
grace = "2s"

[admin]
bind = "127.0.0.1:{port + 3 if port else 0}"

[frontends.demo]
mode = "tcp"
bind = "127.0.0.1:{port}"
default_backend = "demo"
maxconn = 1000

[frontends.web]
mode = "http"
bind = "127.0.0.1:{port + 1 if port else 0}"
default_backend = "demo"
maxconn = 1000

[[frontends.web.routes]]
path_prefix = "/b/"
backend = "only-b"

[frontends.websecure]
mode = "http"
bind = "127.0.0.1:{port + 2 if port else 0}"
default_backend = "demo"
maxconn = 1000
tls = {{ certs = [{{ cert = "{cert}", key = "{key}" }}], alpn = ["h2", "http/1.1"] }}

[backends.demo]
balance = "roundrobin"
servers = [{servers}]

[backends.only-b]
servers = [{entries[-1]}]
"""


def _hints(arbiter: Arbiter, path: str, backends: list[int]) -> None:
    frontends = arbiter.current.config.frontends
    demo, http, tls = frontends["demo"], frontends["web"], frontends["websecure"]
    addr = arbiter.sockets.actual(demo.binds[0], demo.bind_path(0))
    web = arbiter.sockets.actual(http.binds[0], http.bind_path(0))
    secure = arbiter.sockets.actual(tls.binds[0], tls.bind_path(0))
    admin = arbiter.sockets.admin
    stats = f"127.0.0.1:{admin.getsockname()[1]}" if admin is not None else "(none)"
    names = " and ".join(f"{n} (127.0.0.1:{p})" for n, p in zip(NAMES, backends, strict=True))
    print(
        f"""
trilb demo, in front of demo backends {names}:
  Layer 4 (TCP) on {addr}, Layer 7 (HTTP) on {web}, HTTPS (HTTP/2) on {secure}.
Live stats: open http://{stats}/stats in a browser.
Try, in another terminal:
  curl http://{addr}/     # a few times: backends A and B take turns (TCP relay)
  nc {addr.host} {addr.port}     # type a line: the backend echoes it
  curl -i http://{web}/     # HTTP proxy: A and B take turns (see x-backend, via)
  curl http://{web}/b/page     # a route: /b/ always goes to backend B
  curl --http2-prior-knowledge -i http://{web}/     # the same over HTTP/2 (h2c)
  curl -k --http2 -i https://{secure}/     # TLS (a self-signed certificate) and HTTP/2
  curl -H 'Content-Type: application/json' -d '{{"state": "drain"}}' \\
    http://{stats}/api/backends/demo/servers/demo-A
                # drain A: new requests all go to B (then "ready" to undo)
  kill -HUP {os.getpid()}     # reload {path} without dropping a connection
Press Ctrl-C to stop.
""",
        flush=True,
    )


def run_demo(port: int, workers: int) -> int:
    """Start the demo backends and trilb in front of them; returns the exit status."""
    from trilb.cli import run_master
    from trilb.obs.logging import setup_logging

    setup_logging("master", "info")
    procs = []
    path = ""
    scratch = tempfile.TemporaryDirectory(prefix="trilb-demo-")
    try:
        ports = []
        for name in NAMES:
            proc, backend_port = _start_backend(name)
            procs.append(proc)
            ports.append(backend_port)
        cert, key = Path(scratch.name) / "demo.pem", Path(scratch.name) / "demo.key"
        write_self_signed(cert, key)
        fd, path = tempfile.mkstemp(prefix="trilb-demo-", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(_config_text(port, workers, ports, str(cert), str(key)))
        config = load_config(path)
        return run_master(path, config, None, None, lambda a: _hints(a, path, ports))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)
        if path:
            os.unlink(path)
        scratch.cleanup()
