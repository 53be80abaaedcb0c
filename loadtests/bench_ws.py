"""Side-by-side WebSocket benchmark: trilb, HAProxy and nginx proxying WebSocket.

Owns the WebSocket run: an echo backend and load generator (wsload.py, several processes
of each), each proxy in turn in front of the backend, and two measurements per proxy:

- echo: CONNS connections each sending a 64-byte message and waiting for its echo, for
  DURATION seconds: messages/s and round-trip p99 (median of ROUNDS runs);
- idle: IDLE connections opened and held; the resident memory of the proxy's processes
  (master, workers, helpers) before and with them, per connection.

Then trilb alone holds as many as it can (``--max``), the "as many as the machine allows"
figure. The hard `ulimit -n` here is 20,000 per process and each proxied WebSocket holds
two sockets in the proxy: HAProxy (one process) stops under 10,000, and each trilb or
nginx worker does too. Numbers are only comparable within one run: hence the ratios.

    python loadtests/bench_ws.py [--duration 5] [--rounds 3] [--conns 64] [--idle 9000]
                                 [--max 19500] [--only trilb,haproxy,nginx] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchlib import (
    RESULTS,
    BenchError,
    Server,
    commit,
    free_port,
    markdown_grid,
    nginx_argv,
    nginx_temps,
    notes,
    ratio,
    render_grid,
    run_matrix,
    run_stamp,
    start_server,
    stop_server,
    utc_now,
    versions,
)

HERE = Path(__file__).resolve().parent
WSLOAD = [sys.executable, str(HERE / "wsload.py")]
MESSAGE = 64
# Connections one generator process opens at most (its own sockets stay under the limit).
PER_PROCESS = 9000
# A held connection count is read this long after the last one opened (allocations settle).
SETTLE = 2.0
WORKERS = 2


@dataclasses.dataclass
class Row:
    proxy: str
    workers: int
    rates: list[float] = dataclasses.field(default_factory=list)
    p99s: list[float] = dataclasses.field(default_factory=list)
    idle: int = 0
    rss_base_kib: int = 0
    rss_idle_kib: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None

    @property
    def p99(self) -> float | None:
        return statistics.median(self.p99s) if self.p99s else None

    @property
    def per_conn_kib(self) -> float | None:
        if not self.idle:
            return None
        return (self.rss_idle_kib - self.rss_base_kib) / self.idle


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per echo run")
    p.add_argument("--rounds", type=int, default=3, help="echo runs per proxy; medians")
    p.add_argument("--conns", type=int, default=64, help="echo connections")
    p.add_argument("--idle", type=int, default=9000, help="idle connections every proxy holds")
    p.add_argument("--max", type=int, default=19500, help="idle connections trilb tries alone")
    p.add_argument("--only", default="trilb,haproxy,nginx", help="comma-separated proxies")
    p.add_argument("--markdown", type=Path, help="append the table as Markdown to FILE")
    return p.parse_args(argv)


# --- configs -----------------------------------------------------------------------------


def trilb_config(port: int, echo: int) -> str:
    return (
        f'[global]\nworkers = {WORKERS}\ngrace = "1s"\n\n'
        f'[frontends.ws]\nmode = "http"\nbind = "127.0.0.1:{port}"\ndefault_backend = "echo"\n'
        'websocket = { idle_timeout = "1h" }\n\n'
        f'[backends.echo]\nservers = ["127.0.0.1:{echo}"]\n'
    )


def haproxy_config(port: int, echo: int) -> str:
    # maxconn: two sockets per WebSocket within the 20,000 descriptors of one process.
    return (
        f"global\n  nbthread {WORKERS}\n  maxconn 9800\n\n"
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n"
        "  timeout server 60s\n  timeout tunnel 1h\n\n"
        f"frontend ws\n  bind 127.0.0.1:{port}\n  default_backend echo\n\n"
        f"backend echo\n  server echo 127.0.0.1:{echo}\n"
    )


def nginx_config(tmp: Path, port: int, echo: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"daemon off;\nworker_processes {WORKERS};\n{user}worker_rlimit_nofile 20000;\n"
        f"pid {tmp / 'ws'}.pid;\nerror_log {tmp / 'ws'}-error.log warn;\n"
        "events { worker_connections 19000; }\n"
        "http {\n  access_log off;\n"
        f"{nginx_temps(tmp)}"
        f"  upstream echo {{ server 127.0.0.1:{echo}; }}\n"
        f"  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n"
        "    location / {\n      proxy_pass http://echo;\n      proxy_http_version 1.1;\n"
        "      proxy_set_header Upgrade $http_upgrade;\n"
        '      proxy_set_header Connection "upgrade";\n'
        "      proxy_read_timeout 1h;\n      proxy_send_timeout 1h;\n    }\n  }\n}\n"
    )


# --- processes ---------------------------------------------------------------------------


def ws_ready(port: int) -> bool:
    """A WebSocket handshake through ``port`` gets its 101."""
    request = (b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(request)
            return sock.recv(64).startswith(b"HTTP/1.1 101")
    except OSError:
        return False


def start_echo(run_dir: Path, processes: int) -> tuple[list[subprocess.Popen[bytes]], int]:
    """Echo server processes sharing one port (SO_REUSEPORT); and the port."""
    port = free_port()
    procs = []
    with (run_dir / "echo.log").open("ab") as log:
        for _ in range(processes):
            procs.append(subprocess.Popen([*WSLOAD, "serve", str(port)], stdout=subprocess.PIPE,
                                          stderr=log, start_new_session=True))  # fmt: skip
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"READY":
            raise BenchError("the echo server did not start; see echo.log")
    return procs, port


def start_proxy(row: Row, tmp: Path, run_dir: Path, echo: int) -> Server:
    port = free_port()
    log = run_dir / f"{row.proxy}.log"
    env = dict(os.environ)
    if row.proxy == "trilb":
        conf = tmp / "trilb.toml"
        conf.write_text(trilb_config(port, echo))
        argv = [sys.executable, "-m", "trilb", "serve", "-c", str(conf)]
    elif row.proxy == "haproxy":
        conf = tmp / "haproxy.cfg"
        conf.write_text(haproxy_config(port, echo))
        argv = ["haproxy", "-db", "-f", str(conf)]
    else:
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_config(tmp, port, echo))
        argv = nginx_argv(tmp, conf, "nginx-error.log")
    return start_server(row.proxy, argv, port, log, env, ready=ws_ready)


def tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, KiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:")))  # fmt: skip
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return total


# --- measurements ------------------------------------------------------------------------


def echo_run(port: int, conns: int, duration: float) -> tuple[float, float, list[str]]:
    """Messages/s and p99 ms over two generator processes."""
    half = [conns // 2, conns - conns // 2]
    procs = [subprocess.Popen([*WSLOAD, "echo", str(port), str(n), str(duration), str(MESSAGE)],
                              stdout=subprocess.PIPE, text=True) for n in half]  # fmt: skip
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=duration + 60)
        results.append(json.loads(out.strip().splitlines()[-1]))
    problems = []
    opened = sum(r["connections"] for r in results)
    if opened != conns:
        problems.append(f"echo: {opened} of {conns} connections opened")
    if lost := sum(r["lost"] for r in results):
        problems.append(f"echo: {lost} connections lost")
    rate = sum(r["messages"] / r["seconds"] for r in results)
    p99 = max(r["p99_ms"] or 0.0 for r in results)
    return rate, p99, problems


def hold(port: int, conns: int, pid: int) -> tuple[int, int]:
    """Open ``conns`` WebSockets through ``port`` and hold them; returns (how many opened,
    the proxy's resident KiB with them open)."""
    count = max(1, math.ceil(conns / PER_PROCESS))
    shares = [conns // count + (1 if i < conns % count else 0) for i in range(count)]
    procs = [subprocess.Popen([*WSLOAD, "hold", str(port), str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for n in shares]  # fmt: skip
    try:
        opened = 0
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            opened += int(line[1]) if line[:1] == ["READY"] else 0
        time.sleep(SETTLE)
        rss = tree_rss_kib(pid)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            proc.wait(60)
    return opened, rss


def measure(row: Row, server: Server, args: argparse.Namespace) -> None:
    print(f"  {row.proxy} x{row.workers}: echo", end="", flush=True)
    for _ in range(args.rounds):
        rate, p99, problems = echo_run(server.port, args.conns, args.duration)
        row.rates.append(rate)
        row.p99s.append(p99)
        row.notes += problems
    print(", idle", flush=True)
    time.sleep(SETTLE)
    row.rss_base_kib = tree_rss_kib(server.proc.pid)
    row.idle, row.rss_idle_kib = hold(server.port, args.idle, server.proc.pid)
    if row.idle < args.idle:
        row.notes.append(f"idle: {row.idle} of {args.idle} connections opened")


# --- report ------------------------------------------------------------------------------

HEADERS = ["proxy", "workers", "echo msg/s", "vs HAProxy", "echo p99 ms", "vs HAProxy",
           "idle conns", "RSS base MiB", "RSS idle MiB", "KiB/conn", "vs HAProxy"]  # fmt: skip


def cells(rows: list[Row]) -> list[list[str]]:
    base = next((r for r in rows if r.proxy == "haproxy"), None)
    out = []
    for r in rows:
        per = r.per_conn_kib
        out.append([
            r.proxy, str(r.workers),
            f"{r.rate:,.0f}" if r.rate else "-", ratio(r.rate, base.rate if base else None),
            f"{r.p99:.2f}" if r.p99 else "-", ratio(r.p99, base.p99 if base else None),
            f"{r.idle:,}", f"{r.rss_base_kib / 1024:.1f}", f"{r.rss_idle_kib / 1024:.1f}",
            f"{per:.1f}" if per is not None else "-",
            ratio(per, base.per_conn_kib if base else None),
        ])  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = RESULTS / f"ws-{run_stamp()}"
    run_dir.mkdir(parents=True)
    print(f"raw output: {run_dir}", flush=True)
    proxies = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="trilb-bench-") as tmp:
        # Enough echo processes for the largest count (each holds its sockets under the limit).
        echo, port = start_echo(run_dir, max(2, math.ceil(args.max / PER_PROCESS)))
        try:
            rows = run_matrix(
                [Row(p, WORKERS) for p in proxies],
                lambda row: start_proxy(row, Path(tmp), run_dir, port),
                lambda row, server: measure(row, server, args),
            )
            best = None
            if "trilb" in proxies and args.max:
                print(f"  trilb x{WORKERS}: holding up to {args.max:,}", flush=True)
                server = start_proxy(Row("trilb", WORKERS), Path(tmp), run_dir, port)
                try:
                    base = tree_rss_kib(server.proc.pid)
                    best = (base, *hold(server.port, args.max, server.proc.pid))
                finally:
                    stop_server(server)
        finally:
            for proc in echo:
                proc.terminate()
                proc.wait(10)
    head = [f"{utc_now()}, commit {commit()}, {versions()}",
            f"echo: {args.conns} connections, {MESSAGE}-byte messages, {args.duration:g}s x "
            f"{args.rounds} (medians); idle: {args.idle:,} connections held", ""]  # fmt: skip
    tail = []
    if best is not None:
        base, opened, rss = best
        tail.append(f"trilb x{WORKERS} alone: {opened:,} of {args.max:,} WebSockets held, "
                    f"RSS {base / 1024:.1f} -> {rss / 1024:.1f} MiB, "
                    f"{(rss - base) / max(opened, 1):.1f} KiB per connection")  # fmt: skip
    tail += notes(rows)
    text = "\n".join([*head, *render_grid(HEADERS, cells(rows)), "", *tail])
    print("\n" + text)
    (run_dir / "table.txt").write_text(text + "\n")
    if args.markdown:
        table = markdown_grid(HEADERS, cells(rows))
        with args.markdown.open("a") as out:
            out.write("\n".join(["", *head, *table, "", *tail]) + "\n")
        print(f"appended to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
