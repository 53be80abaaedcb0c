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
from typing import TYPE_CHECKING

from trilb.config.load import load_config

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


def _config_text(port: int, workers: int, backends: list[int]) -> str:
    entries = [
        f'{{ address = "127.0.0.1:{p}", name = "demo-{n}" }}'
        for n, p in zip(NAMES, backends, strict=True)
    ]
    servers = ", ".join(entries)
    return f"""# written by `trilb demo`: edit it and send SIGHUP to the master to reload
[global]
workers = {workers}
grace = "2s"

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

[backends.demo]
balance = "roundrobin"
servers = [{servers}]

[backends.only-b]
servers = [{entries[-1]}]
"""


def _hints(arbiter: Arbiter, path: str, backends: list[int]) -> None:
    frontends = arbiter.current.config.frontends
    demo, http = frontends["demo"], frontends["web"]
    addr = arbiter.sockets.actual(demo.binds[0], demo.bind_path(0))
    web = arbiter.sockets.actual(http.binds[0], http.bind_path(0))
    names = " and ".join(f"{n} (127.0.0.1:{p})" for n, p in zip(NAMES, backends, strict=True))
    print(
        f"""
trilb demo, in front of demo backends {names}:
  Layer 4 (TCP) on {addr}, Layer 7 (HTTP) on {web}.
Try, in another terminal:
  curl http://{addr}/     # a few times: backends A and B take turns (TCP relay)
  nc {addr.host} {addr.port}     # type a line: the backend echoes it
  curl -i http://{web}/     # HTTP proxy: A and B take turns (see x-backend, via)
  curl http://{web}/b/page     # a route: /b/ always goes to backend B
  curl --http2-prior-knowledge -i http://{web}/     # the same over HTTP/2 (h2c)
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
    try:
        ports = []
        for name in NAMES:
            proc, backend_port = _start_backend(name)
            procs.append(proc)
            ports.append(backend_port)
        fd, path = tempfile.mkstemp(prefix="trilb-demo-", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(_config_text(port, workers, ports))
        config = load_config(path)
        return run_master(path, config, None, None, lambda a: _hints(a, path, ports))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)
        if path:
            os.unlink(path)
